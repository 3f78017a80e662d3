# brokerside, the sidecar proxy next to EMQX: one per EMQX node (a system job constrained to the
# EMQX pool). It owns the public ports 1883/8883/8083/8084 and relays to the local EMQX on
# 21883/28883/28083/28084; :8080 answers the load balancer's and Consul's GET /haproxy_health.

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "brokerside_image" {
  type = string
}

job "brokerside" {
  datacenters = var.datacenters
  type        = "system"

  constraint {
    attribute = "${meta.pool_type}"
    value     = "emqx"
  }

  update {
    max_parallel = 1
    stagger      = "60s"
  }

  group "brokerside" {
    network {
      mode = "host"
      port "mqtt" {
        static = 1883
      }
      port "mqtts" {
        static = 8883
      }
      port "ws" {
        static = 8083
      }
      port "wss" {
        static = 8084
      }
      port "admin" {
        static = 8080
      }
    }

    service {
      name     = "brokerside"
      port     = "mqtt"
      provider = "consul"
      tags     = ["emqx", "mqtt"]

      check {
        name     = "brokerside-haproxy-health"
        type     = "http"
        port     = "admin"
        path     = "/haproxy_health"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "brokerside" {
      driver = "docker"

      config {
        image        = var.brokerside_image
        network_mode = "host"
        args         = ["run", "--config", "/local/brokerside.toml", "--log-format", "json"]
      }

      # SIGTERM starts the drain; its deadline is [drain] deadline = "120s" below, so Nomad must
      # wait longer than that before SIGKILL. The client's max_kill_timeout (cloud-init) is 180s.
      kill_signal  = "SIGTERM"
      kill_timeout = "150s"

      template {
        destination   = "local/brokerside.toml"
        # A changed config restarts the task (drain first): brokerside does not reload on
        # SIGHUP yet.
        change_mode   = "restart"
        data          = <<-EOT
          # brokerside on an EMQX node; rendered by Nomad from the brokerside job's template block.
          [admin]
          listen = "0.0.0.0:{{ env "NOMAD_PORT_admin" }}"

          [[listener]]
          name = "mqtt"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_mqtt" }}"
          backend = "broker-mqtt"
          max_connections = 500000
          idle_timeout = "0s"

          [[listener]]
          name = "mqtts"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_mqtts" }}"
          backend = "broker-mqtts"

          [[listener]]
          name = "ws"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_ws" }}"
          backend = "broker-ws"

          [[listener]]
          name = "wss"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_wss" }}"
          backend = "broker-wss"

          # The local EMQX (host network), its listeners moved off the public ports.
          [[backend]]
          name = "broker-mqtt"
          servers = ["127.0.0.1:21883"]
          loopback_sources = "auto"
          # While the local EMQX is down, clients go to the other nodes' EMQX directly: the
          # Consul service "emqx" is registered on its MQTT port (21883), which SRV carries.
          peers = "emqx"
          [backend.check]
          kind = "mqtt"
          interval = "2s"
          timeout = "1s"

          [[backend]]
          name = "broker-mqtts"
          servers = ["127.0.0.1:28883"]

          [[backend]]
          name = "broker-ws"
          servers = ["127.0.0.1:28083"]

          [[backend]]
          name = "broker-wss"
          servers = ["127.0.0.1:28084"]

          # This node, as EMQX names it.
          [node]
          advertise = "{{ env "NOMAD_IP_admin" }}"

          # The other EMQX nodes through the local Consul agent's DNS.
          [[discovery]]
          name = "emqx"
          kind = "dns"
          record = "srv"
          query = "emqx.service.consul"
          nameservers = ["127.0.0.1:8600"]
          node_name = "emqx@{ip}"

          # The cluster guard: 503 while this EMQX sees fewer than a quorum of the nodes.
          [cluster]
          members = "emqx"
          url = "http://127.0.0.1:18083/api/v5/nodes"
          discovery = "emqx"
          username_env = "EMQX_API_KEY"
          password_env = "EMQX_API_SECRET"

          [drain]
          deadline = "120s"
        EOT
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}

# EMQX, one allocation per EMQX node (instance pool), behind brokerside.
#
# EMQX's listeners are moved off the public ports to the ports brokerside relays to:
# 1883 -> 21883 (mqtt), 8883 -> 28883 (mqtts), 8083 -> 28083 (ws), 8084 -> 28084 (wss).
# The nodes find each other through Consul DNS: every allocation registers the service "emqx"
# and EMQX's DNS discovery resolves emqx.service.consul to the node addresses.

variable "emqx_count" {
  description = "Number of EMQX nodes."
  type        = number
}

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "emqx_image" {
  type    = string
  default = "emqx/emqx:5.8.6"
}

variable "erlang_cookie" {
  type = string
}

variable "dns_name" {
  type    = string
  default = "emqx.service.consul"
}

job "emqx" {
  datacenters = var.datacenters
  type        = "service"

  # Only on the EMQX pool's nodes (cloud-init sets client meta pool_type = "emqx").
  constraint {
    attribute = "${meta.pool_type}"
    value     = "emqx"
  }

  # One node per host: each host owns one data volume.
  constraint {
    operator = "distinct_hosts"
    value    = "true"
  }

  update {
    max_parallel     = 1
    min_healthy_time = "30s"
    healthy_deadline = "5m"
  }

  group "emqx" {
    count = var.emqx_count

    network {
      mode = "host"
      port "mqtt" {
        static = 21883
      }
      port "mqtts" {
        static = 28883
      }
      port "ws" {
        static = 28083
      }
      port "wss" {
        static = 28084
      }
      port "dashboard" {
        static = 18083
      }
      port "ekka" {
        static = 4370
      }
      port "rpc" {
        static = 5370
      }
    }

    # /opt/nomad/data/emqx-<group-index> on the host, a link to the node's block volume.
    volume "data" {
      type      = "host"
      source    = "emqx-data"
      read_only = false
    }

    service {
      name     = "emqx"
      port     = "mqtt"
      provider = "consul"
      tags     = ["emqx", "mqtt"]

      check {
        name     = "emqx-mqtt-tcp"
        type     = "tcp"
        port     = "mqtt"
        interval = "10s"
        timeout  = "2s"
      }

      check {
        name     = "emqx-status"
        type     = "http"
        port     = "dashboard"
        path     = "/api/v5/status"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "emqx" {
      driver = "docker"

      config {
        image        = var.emqx_image
        network_mode = "host"
      }

      volume_mount {
        volume      = "data"
        destination = "/opt/emqx/data"
      }

      env {
        EMQX_NODE__NAME                          = "emqx@${attr.unique.network.ip-address}"
        EMQX_NODE__COOKIE                        = var.erlang_cookie
        EMQX_CLUSTER__DISCOVERY_STRATEGY         = "dns"
        EMQX_CLUSTER__DNS__NAME                  = var.dns_name
        EMQX_CLUSTER__DNS__RECORD_TYPE           = "a"
        EMQX_LISTENERS__TCP__DEFAULT__BIND       = "0.0.0.0:21883"
        EMQX_LISTENERS__SSL__DEFAULT__BIND       = "0.0.0.0:28883"
        EMQX_LISTENERS__WS__DEFAULT__BIND        = "0.0.0.0:28083"
        EMQX_LISTENERS__WSS__DEFAULT__BIND       = "0.0.0.0:28084"
        EMQX_DASHBOARD__LISTENERS__HTTP__BIND    = "18083"
      }

      # brokerside drains first (up to 120s); EMQX then leaves the cluster cleanly.
      kill_timeout = "60s"

      resources {
        cpu    = 2000
        memory = 4096
      }
    }
  }
}

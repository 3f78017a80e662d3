# brokerside, the sidecar proxy next to EMQX: one per EMQX node (a system job constrained to the
# EMQX pool). It owns the public ports 1883/8883/8083/8084 and relays to the local EMQX on
# 21883/28883/28083/28084; :8080 answers the load balancer's and Consul's GET /haproxy_health.
# With tls_termination = true it ends TLS on 8883/8084 itself, with a certificate from Vault's
# PKI, and relays plaintext to EMQX's 21883/28083 (deploy/README.md, TLS termination).

variable "datacenters" {
  type    = list(string)
  default = ["dc1"]
}

variable "brokerside_image" {
  type = string
}

# Consul KV prefix of the live tunables the config template reads (see the template below).
variable "consul_kv_prefix" {
  type    = string
  default = "brokerside"
}

# TLS termination on mqtts (8883) and wss (8084), off by default: TLS then passes through to
# EMQX's own TLS listeners (28883, 28084) as before. When true, brokerside terminates TLS with a
# certificate from Vault's PKI secrets engine and relays plaintext to EMQX's plain listeners:
# mqtts to 21883 (EMQX's tcp listener), wss to 28083 (EMQX's ws listener). See deploy/README.md.
variable "tls_termination" {
  type    = bool
  default = false
}

# The Vault PKI endpoint that issues the certificate: <mount>/issue/<role>.
variable "tls_pki_issue_path" {
  type    = string
  default = "pki/issue/brokerside"
}

# The certificate's common name: the name MQTT clients connect to (mqtt.<domain>).
variable "tls_common_name" {
  type    = string
  default = "mqtt.example.com"
}

# Requested lifetime. Nomad (consul-template's pkiCert) fetches a new certificate once about 90%
# of it has passed, so the last ~10% is the margin: 4320h (180 days) leaves 18 days, ahead of the
# 14-day BrokersideCertificateExpiresSoon alert. The PKI role's max_ttl caps it.
variable "tls_ttl" {
  type    = string
  default = "4320h"
}

# PEM of the CA that signs client certificates. Empty: no client certificates asked for. Set:
# mTLS, every client must present a certificate this CA signed (client_auth = "required").
variable "tls_client_ca" {
  type    = string
  default = ""
}

# The Vault role the task's workload identity logs in with (Nomad 1.7+); its policy needs
# `path "pki/issue/brokerside" { capabilities = ["update"] }`.
variable "vault_role" {
  type    = string
  default = "brokerside"
}

locals {
  # The [listener.tls] table of the mqtts and wss listeners in the config template below:
  # nothing while TLS passes through; with tls_termination, the certificate Nomad renders from
  # Vault's PKI into the secrets dir (see the templates below) and, with tls_client_ca, the
  # client CA (mTLS). brokerside re-reads these files on SIGHUP and when their content changes.
  listener_tls = <<-EOT
    %{ if var.tls_termination ~}
    [listener.tls]
    cert = "{{ env "NOMAD_SECRETS_DIR" }}/brokerside-tls.pem"
    key = "{{ env "NOMAD_SECRETS_DIR" }}/brokerside-tls.pem"
    %{ if var.tls_client_ca != "" ~}
    client_ca = "{{ env "NOMAD_SECRETS_DIR" }}/clients-ca.pem"
    client_auth = "required"
    %{ endif ~}
    %{ endif ~}
  EOT
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

      # Only with TLS termination: the Vault token templates use to ask Vault's PKI for the
      # certificate. change_mode = "noop": a renewed or replaced token is only used by the
      # template runner, so brokerside is neither restarted nor signalled for it.
      dynamic "vault" {
        for_each = var.tls_termination ? ["pki"] : []
        content {
          role        = var.vault_role
          change_mode = "noop"
        }
      }

      # Only with TLS termination: the certificate, its issuing CA and its key from Vault's PKI,
      # in ONE file in the task's secrets dir (tmpfs, /secrets in the container), which
      # [listener.tls] cert and key below both name. One file on purpose:
      # - pkiCert issues a new certificate per template (its Vault request is not shared between
      #   templates), so a cert template and a key template would hold different certificates;
      # - pkiCert uses its destination file as its cache: after a restart it reuses the
      #   certificate found there while it is valid, which needs the certificate in that file;
      # - the new certificate and key land together in one rename, so brokerside never reads
      #   a new certificate beside an old key.
      # Rotation: pkiCert fetches a new certificate once ~90% of tls_ttl has passed, Nomad
      # writes the file (by rename) and sends SIGHUP: brokerside reloads and serves the new
      # certificate to new handshakes; open connections carry on untouched, nobody reconnects.
      # Its [listener.tls] watch (default 5s) would also see the new content without the signal.
      dynamic "template" {
        for_each = var.tls_termination ? ["pki"] : []
        content {
          # The secrets dir is the task's own tmpfs. With an image that runs as a known user,
          # uid/gid and perms = "0600" narrow the file further.
          destination   = "secrets/brokerside-tls.pem"
          change_mode   = "signal"
          change_signal = "SIGHUP"
          data          = <<-EOT
            {{ with pkiCert "${var.tls_pki_issue_path}" "common_name=${var.tls_common_name}" "ttl=${var.tls_ttl}" }}{{ .Cert }}{{ .CA }}{{ .Key }}{{ end }}
          EOT
        }
      }

      # Only with TLS termination and tls_client_ca set: the CA client certificates must chain
      # to (mTLS). Its text is in the jobspec, so a new CA is a job change (Nomad replaces the
      # allocation, draining first, one node at a time), like any other edit of a template.
      dynamic "template" {
        for_each = var.tls_termination && var.tls_client_ca != "" ? ["client-ca"] : []
        content {
          destination   = "secrets/clients-ca.pem"
          change_mode   = "signal"
          change_signal = "SIGHUP"
          data          = var.tls_client_ca
        }
      }

      template {
        destination = "local/brokerside.toml"
        # A re-rendered config is applied in-process: Nomad writes the file and sends SIGHUP,
        # brokerside reloads it without a drain, and connected clients stay connected (no
        # reconnect storm, unlike change_mode = "restart", which drains the node).
        #
        # Nomad re-renders only when data the template reads changes during the allocation. So
        # the values operators tune at run time are read from Consul KV under
        # var.consul_kv_prefix (default "brokerside"), each with an inline default:
        # {{ keyOrDefault "brokerside/drain/close_rate" "500" }} renders "500" while the key is
        # absent and watches the key. Keys follow the TOML path, [[table]] entries by name:
        #   brokerside/listener/<mqtt|mqtts|ws|wss>/max_connections     (default 500000)
        #   brokerside/listener/<mqtt|mqtts|ws|wss>/idle_timeout        ("0s" = none)
        #   brokerside/backend/broker-mqtt/check/{interval,timeout,rise,fall}  (2s, 1s, 2, 3)
        #   brokerside/backend/broker-mqtt/failback_rate                (50 per second)
        #   brokerside/discovery/emqx/interval                          (5s)
        #   brokerside/drain/close_rate                                 (500 per second)
        # `consul kv put brokerside/drain/close_rate 200` -> Nomad re-renders this file and,
        # after a random wait of up to `splay` (default 5s, so the nodes do not all reload in
        # the same instant), sends SIGHUP; brokerside reloads it live. Check
        # brokerside_config_reloads_total{result="ok"} and `GET /health` config.generation.
        # `consul kv delete` goes back to the default the same way. A new idle_timeout applies
        # to new connections; a lower max_connections refuses new clients, never closes any.
        #
        # A bad value (`consul kv put brokerside/drain/close_rate fast`) is refused: the running
        # config stays, brokerside logs a WARN "config reload refused" and counts
        # brokerside_config_reloads_total{result="error"}. Nomad has written the bad file all
        # the same, so a task restart (a crash, `nomad alloc restart`) would start from it and
        # fail: fix the KV value (or delete the key) to recover, which re-renders and reloads.
        #
        # Not in KV, on purpose: runtime.relay_threads and the admin listener settings
        # (admin.listen, admin.max_connections, admin.header_timeout) need a restart, and
        # brokerside refuses a reload that changes them; [drain] deadline, because kill_timeout
        # above must outlast it. Change those here and re-run the job (`nomad job run`,
        # `terraform apply`): editing the template is a task change, so Nomad replaces the
        # allocation (SIGTERM, drain, new task), one node at a time (update.max_parallel = 1).
        #
        # Reading KV needs the Nomad client's Consul integration (as the service registration
        # does) and, with Consul ACLs, read access to the prefix for the token Nomad's templates
        # use: key_prefix "brokerside/" { policy = "read" }.
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          # brokerside on an EMQX node; rendered by Nomad from the brokerside job's template block.
          # Live tunables come from Consul KV under ${var.consul_kv_prefix}/ (see the jobspec).
          [admin]
          listen = "0.0.0.0:{{ env "NOMAD_PORT_admin" }}"

          [[listener]]
          name = "mqtt"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_mqtt" }}"
          backend = "broker-mqtt"
          max_connections = {{ keyOrDefault "${var.consul_kv_prefix}/listener/mqtt/max_connections" "500000" }}
          idle_timeout = "{{ keyOrDefault "${var.consul_kv_prefix}/listener/mqtt/idle_timeout" "0s" }}"

          [[listener]]
          name = "mqtts"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_mqtts" }}"
          backend = "broker-mqtts"
          max_connections = {{ keyOrDefault "${var.consul_kv_prefix}/listener/mqtts/max_connections" "500000" }}
          idle_timeout = "{{ keyOrDefault "${var.consul_kv_prefix}/listener/mqtts/idle_timeout" "0s" }}"
          ${local.listener_tls}

          [[listener]]
          name = "ws"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_ws" }}"
          backend = "broker-ws"
          max_connections = {{ keyOrDefault "${var.consul_kv_prefix}/listener/ws/max_connections" "500000" }}
          idle_timeout = "{{ keyOrDefault "${var.consul_kv_prefix}/listener/ws/idle_timeout" "0s" }}"

          [[listener]]
          name = "wss"
          listen = "0.0.0.0:{{ env "NOMAD_PORT_wss" }}"
          backend = "broker-wss"
          max_connections = {{ keyOrDefault "${var.consul_kv_prefix}/listener/wss/max_connections" "500000" }}
          idle_timeout = "{{ keyOrDefault "${var.consul_kv_prefix}/listener/wss/idle_timeout" "0s" }}"
          ${local.listener_tls}

          # The local EMQX (host network), its listeners moved off the public ports.
          [[backend]]
          name = "broker-mqtt"
          servers = ["127.0.0.1:21883"]
          loopback_sources = "auto"
          # While the local EMQX is down, clients go to the other nodes' EMQX directly: the
          # Consul service "emqx" is registered on its MQTT port (21883), which SRV carries.
          peers = "emqx"
          # Connections per second moved back from the peers once the local EMQX is up again.
          failback_rate = {{ keyOrDefault "${var.consul_kv_prefix}/backend/broker-mqtt/failback_rate" "50" }}
          [backend.check]
          kind = "mqtt"
          interval = "{{ keyOrDefault "${var.consul_kv_prefix}/backend/broker-mqtt/check/interval" "2s" }}"
          timeout = "{{ keyOrDefault "${var.consul_kv_prefix}/backend/broker-mqtt/check/timeout" "1s" }}"
          rise = {{ keyOrDefault "${var.consul_kv_prefix}/backend/broker-mqtt/check/rise" "2" }}
          fall = {{ keyOrDefault "${var.consul_kv_prefix}/backend/broker-mqtt/check/fall" "3" }}

          # mqtts: EMQX's TLS listener (28883) while TLS passes through; with tls_termination,
          # the plaintext goes to EMQX's tcp listener (21883), as mqtt's does.
          [[backend]]
          name = "broker-mqtts"
          servers = ["127.0.0.1:${var.tls_termination ? 21883 : 28883}"]

          [[backend]]
          name = "broker-ws"
          servers = ["127.0.0.1:28083"]

          # wss: EMQX's wss listener (28084) while TLS passes through; with tls_termination, the
          # WebSocket bytes go to EMQX's ws listener (28083), as ws's do.
          [[backend]]
          name = "broker-wss"
          servers = ["127.0.0.1:${var.tls_termination ? 28083 : 28084}"]

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
          interval = "{{ keyOrDefault "${var.consul_kv_prefix}/discovery/emqx/interval" "5s" }}"

          # The cluster guard: 503 while this EMQX sees fewer than a quorum of the nodes.
          [cluster]
          members = "emqx"
          url = "http://127.0.0.1:18083/api/v5/nodes"
          discovery = "emqx"
          username_env = "EMQX_API_KEY"
          password_env = "EMQX_API_SECRET"

          [drain]
          deadline = "120s"
          close_rate = {{ keyOrDefault "${var.consul_kv_prefix}/drain/close_rate" "500" }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}

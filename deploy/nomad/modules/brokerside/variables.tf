variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "brokerside_image" {
  description = "brokerside Docker image."
  type        = string
}

variable "consul_kv_prefix" {
  description = "Consul KV prefix of brokerside's live tunables: `consul kv put <prefix>/drain/close_rate 200` re-renders the config and Nomad sends SIGHUP (see jobspec.nomad.hcl)."
  type        = string
  default     = "brokerside"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", var.consul_kv_prefix))
    error_message = "consul_kv_prefix is a KV path without a leading or trailing slash, such as \"brokerside\" or \"emqx/brokerside\"."
  }
}

variable "tls_termination" {
  description = "Terminate TLS for mqtts (8883) and wss (8084) in brokerside, with a certificate from Vault's PKI, and relay plaintext to EMQX's tcp (21883) and ws (28083) listeners. false: TLS passes through to EMQX's own TLS listeners (28883, 28084). See deploy/README.md, TLS termination."
  type        = bool
  default     = false
}

variable "tls_pki_issue_path" {
  description = "Vault PKI endpoint that issues brokerside's certificate, <mount>/issue/<role>."
  type        = string
  default     = "pki/issue/brokerside"

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*/issue/[A-Za-z0-9_.-]+$", var.tls_pki_issue_path))
    error_message = "tls_pki_issue_path is a Vault PKI issue path such as \"pki/issue/brokerside\"."
  }
}

variable "tls_common_name" {
  description = "Common name of the certificate: the name MQTT clients connect to, such as mqtt.<domain>."
  type        = string
  default     = "mqtt.example.com"
}

variable "tls_ttl" {
  description = "Requested certificate lifetime. Nomad fetches a new one once ~90% of it has passed, so 10% of it should exceed the 14 days of the BrokersideCertificateExpiresSoon alert (the role's max_ttl caps it)."
  type        = string
  default     = "4320h"

  validation {
    condition     = can(regex("^[0-9]+[smh]$", var.tls_ttl))
    error_message = "tls_ttl is a Vault duration such as \"4320h\"."
  }
}

variable "tls_client_ca" {
  description = "PEM of the CA that signs client certificates. Empty: no client certificates. Set: mTLS, a client without a certificate from this CA is refused."
  type        = string
  default     = ""
}

variable "vault_role" {
  description = "Vault role the task's workload identity logs in with to ask the PKI for the certificate (only with tls_termination)."
  type        = string
  default     = "brokerside"
}

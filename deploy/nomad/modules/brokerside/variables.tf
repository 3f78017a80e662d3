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

variable "emqx_count" {
  description = "Number of EMQX nodes: the number of EMQX instance pools."
  type        = number
}

variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "emqx_image" {
  description = "EMQX Docker image."
  type        = string
  default     = "emqx/emqx:5.8.6"
}

variable "erlang_cookie" {
  description = "Erlang distribution cookie shared by the EMQX nodes."
  type        = string
  sensitive   = true
}

variable "dns_name" {
  description = "DNS name whose A records are the EMQX nodes (Consul DNS), for cluster discovery."
  type        = string
  default     = "emqx.service.consul"
}

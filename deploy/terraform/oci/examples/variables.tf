variable "region" {
  description = "OCI region, e.g. eu-frankfurt-1."
  type        = string
}

variable "tenancy_ocid" {
  description = "OCID of the tenancy (to list availability domains)."
  type        = string
}

variable "compartment_id" {
  description = "OCID of the compartment of everything created here."
  type        = string
}

variable "vcn_id" {
  description = "OCID of the existing VCN."
  type        = string
}

variable "vcn_cidr" {
  description = "CIDR of the VCN."
  type        = string
}

variable "lb_subnet_id" {
  description = "OCID of the subnet of the network load balancer."
  type        = string
}

variable "pool_subnet_id" {
  description = "OCID of the subnet of the EMQX instances."
  type        = string
}

variable "client_cidrs" {
  description = "CIDRs of the MQTT clients."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "domain" {
  description = "DNS domain; clients connect to mqtt.<domain>."
  type        = string
}

variable "dns_zone_name_or_id" {
  description = "OCI DNS zone of <domain>."
  type        = string
}

variable "emqx_count" {
  description = "Number of EMQX nodes."
  type        = number
  default     = 3
}

variable "image_id" {
  description = "OCID of the node image (Nomad, Consul, Docker installed)."
  type        = string
}

variable "ssh_authorized_keys" {
  description = "SSH public keys for the opc user."
  type        = string
}

variable "consul_retry_join" {
  description = "Consul server addresses for the agents on the EMQX nodes."
  type        = list(string)
}

variable "nomad_address" {
  description = "Nomad API address, e.g. https://nomad.service.consul:4646."
  type        = string
}

variable "erlang_cookie" {
  description = "Erlang distribution cookie of the EMQX cluster."
  type        = string
  sensitive   = true
}

variable "brokerside_image" {
  description = "brokerside Docker image."
  type        = string
}

variable "brokerside_tls_termination" {
  description = "Terminate mqtts/wss TLS in brokerside with a certificate from Vault's PKI (pki/issue/brokerside) instead of passing it through to EMQX."
  type        = bool
  default     = false
}

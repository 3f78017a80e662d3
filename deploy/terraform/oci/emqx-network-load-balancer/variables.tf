variable "compartment_id" {
  description = "OCID of the compartment of the load balancer and of the DNS zone."
  type        = string
}

variable "subnet_id" {
  description = "OCID of the subnet the load balancer lives in."
  type        = string
}

variable "nsg_ids" {
  description = "NSGs attached to the load balancer (the security-group module's lb_nsg_id)."
  type        = list(string)
  default     = []
}

variable "display_name" {
  description = "Display name of the network load balancer."
  type        = string
  default     = "emqx-nlb"
}

variable "is_private" {
  description = "true for a private load balancer (VCN-only clients)."
  type        = bool
  default     = false
}

variable "backend_policy" {
  description = "Flow hashing policy of every backend set."
  type        = string
  default     = "FIVE_TUPLE"
  validation {
    condition     = contains(["FIVE_TUPLE", "THREE_TUPLE", "TWO_TUPLE"], var.backend_policy)
    error_message = "A network load balancer backend set policy is FIVE_TUPLE, THREE_TUPLE or TWO_TUPLE."
  }
}

variable "domain" {
  description = "DNS domain; the record created is mqtt.<domain>."
  type        = string
}

variable "dns_zone_name_or_id" {
  description = "Name or OCID of the OCI DNS zone that holds <domain>."
  type        = string
}

variable "dns_ttl" {
  description = "TTL of the mqtt.<domain> record, in seconds."
  type        = number
  default     = 60
}

variable "freeform_tags" {
  description = "Free-form tags of the load balancer."
  type        = map(string)
  default     = {}
}

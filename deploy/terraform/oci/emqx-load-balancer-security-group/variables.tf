variable "compartment_id" {
  description = "OCID of the compartment that holds the NSGs."
  type        = string
}

variable "vcn_id" {
  description = "OCID of the VCN."
  type        = string
}

variable "vcn_cidr" {
  description = "CIDR of the VCN: the only source allowed to reach the EMQX dashboard (18083)."
  type        = string
}

variable "client_cidrs" {
  description = "CIDRs of the MQTT clients allowed on 1883, 8883, 8083 and 8084."
  type        = list(string)
}

variable "name_prefix" {
  description = "Prefix of the NSG display names."
  type        = string
  default     = "emqx"
}

variable "freeform_tags" {
  description = "Free-form tags applied to both NSGs."
  type        = map(string)
  default     = {}
}

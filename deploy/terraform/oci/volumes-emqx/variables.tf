variable "compartment_id" {
  description = "OCID of the compartment of the volumes."
  type        = string
}

variable "availability_domains" {
  description = "Availability domain names, used round-robin by volume index."
  type        = list(string)
}

variable "volume_count" {
  description = "Number of volumes: one per EMQX instance pool."
  type        = number
}

variable "size_in_gbs" {
  description = "Size of each volume in GB."
  type        = number
  default     = 100
}

variable "vpus_per_gb" {
  description = "Performance of each volume (10 = balanced)."
  type        = number
  default     = 10
}

variable "name_prefix" {
  description = "Prefix of the volume display names."
  type        = string
  default     = "emqx"
}

variable "freeform_tags" {
  description = "Extra free-form tags; volume-role and volume-index are always set."
  type        = map(string)
  default     = {}
}

variable "compartment_id" {
  description = "OCID of the compartment of the instances and pools."
  type        = string
}

variable "pool_count" {
  description = "Number of EMQX nodes: one instance pool of size 1 each."
  type        = number
}

variable "availability_domains" {
  description = "Availability domain names, used round-robin by group-index."
  type        = list(string)
}

variable "volume_ids" {
  description = "Block volume OCIDs by volume-index (volumes-emqx volume_ids)."
  type        = list(string)
}

variable "volume_availability_domains" {
  description = "The availability domain of each volume (volumes-emqx availability_domains); checked against the pool's."
  type        = list(string)
}

variable "subnet_id" {
  description = "OCID of the subnet of the EMQX instances."
  type        = string
}

variable "nsg_ids" {
  description = "NSGs of the EMQX instances (the security-group module's emqx_nsg_id)."
  type        = list(string)
}

variable "image_id" {
  description = "OCID of the image: an image with Nomad, Consul and Docker installed."
  type        = string
}

variable "shape" {
  description = "Compute shape."
  type        = string
  default     = "VM.Standard.E4.Flex"
}

variable "ocpus" {
  description = "OCPUs of each instance."
  type        = number
  default     = 2
}

variable "memory_in_gbs" {
  description = "Memory of each instance in GB."
  type        = number
  default     = 16
}

variable "ssh_authorized_keys" {
  description = "SSH public keys for the opc user."
  type        = string
}

variable "device_path" {
  description = "Consistent device path the EMQX volume is attached at."
  type        = string
  default     = "/dev/oracleoci/oraclevdb"
}

variable "load_balancer_id" {
  description = "OCID of the network load balancer (emqx-network-load-balancer load_balancer_id)."
  type        = string
}

variable "backend_sets" {
  description = "Backend set name => traffic port (emqx-network-load-balancer backend_sets)."
  type        = map(number)
}

variable "nomad_datacenter" {
  description = "Nomad datacenter of the clients."
  type        = string
  default     = "dc1"
}

variable "nomad_max_kill_timeout" {
  description = "Nomad client max_kill_timeout; must exceed brokerside's kill_timeout (150s)."
  type        = string
  default     = "180s"
}

variable "consul_retry_join" {
  description = "Consul retry_join addresses for the agents on the EMQX nodes."
  type        = list(string)
}

variable "name_prefix" {
  description = "Prefix of display names."
  type        = string
  default     = "emqx"
}

variable "freeform_tags" {
  description = "Extra free-form tags; group-index is always set."
  type        = map(string)
  default     = {}
}

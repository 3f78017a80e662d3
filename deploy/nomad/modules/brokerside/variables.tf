variable "datacenters" {
  description = "Nomad datacenters the job may run in."
  type        = list(string)
  default     = ["dc1"]
}

variable "brokerside_image" {
  description = "brokerside Docker image."
  type        = string
}

output "instance_pool_ids" {
  description = "Instance pool OCIDs by group-index."
  value       = oci_core_instance_pool.emqx[*].id
}

output "private_ips" {
  description = "Private IP of the single instance of each pool, by group-index."
  value       = data.oci_core_instance.emqx[*].private_ip
}

output "instance_configuration_ids" {
  description = "Instance configuration OCIDs by group-index."
  value       = oci_core_instance_configuration.emqx[*].id
}

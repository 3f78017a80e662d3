output "volume_ids" {
  description = "Volume OCIDs by volume-index."
  value       = oci_core_volume.emqx[*].id
}

output "availability_domains" {
  description = "The availability domain of each volume, by volume-index."
  value       = oci_core_volume.emqx[*].availability_domain
}

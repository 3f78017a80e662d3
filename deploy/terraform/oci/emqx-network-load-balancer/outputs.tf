output "load_balancer_id" {
  description = "OCID of the network load balancer."
  value       = oci_network_load_balancer_network_load_balancer.this.id
}

output "backend_set_names" {
  description = "Names of the four backend sets."
  value       = [for name, set in oci_network_load_balancer_backend_set.this : set.name]
}

output "backend_sets" {
  description = "Backend set name => the port traffic is sent to on each backend (for instance pool attachment)."
  value       = local.backend_sets
}

output "ip_address" {
  description = "The load balancer's first IP address."
  value       = oci_network_load_balancer_network_load_balancer.this.ip_addresses[0].ip_address
}

output "dns_name" {
  description = "The DNS name clients connect to."
  value       = oci_dns_rrset.mqtt.domain
}

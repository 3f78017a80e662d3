output "lb_nsg_id" {
  description = "NSG to attach to the network load balancer."
  value       = oci_core_network_security_group.lb.id
}

output "emqx_nsg_id" {
  description = "NSG to attach to the EMQX instances."
  value       = oci_core_network_security_group.emqx.id
}

output "load_balancer_id" {
  description = "OCID of the network load balancer."
  value       = module.network_load_balancer.load_balancer_id
}

output "backend_set_names" {
  description = "The NLB backend sets."
  value       = module.network_load_balancer.backend_set_names
}

output "mqtt_dns_name" {
  description = "Where clients connect."
  value       = module.network_load_balancer.dns_name
}

output "private_ips" {
  description = "Private IPs of the EMQX nodes by group-index."
  value       = module.instance_pools.private_ips
}

output "instance_pool_ids" {
  description = "Instance pools by group-index."
  value       = module.instance_pools.instance_pool_ids
}

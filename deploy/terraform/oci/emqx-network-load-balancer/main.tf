# The OCI network load balancer in front of the EMQX pool.
#
# Four TCP listeners, one backend set each. Every backend set is health-checked over HTTP on
# brokerside's admin port: GET :8080/haproxy_health must answer 200, every 10 s, 3 retries.
# brokerside turns that check to 503 when it drains, so the NLB stops sending new clients first.

terraform {
  required_version = ">= 1.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.19.0"
    }
  }
}

locals {
  # Backend set name => the port the NLB listens on and forwards to (brokerside's listener).
  backend_sets = {
    "emqx-mqtt-backend"  = 1883
    "emqx-mqtts-backend" = 8883
    "emqx-ws-backend"    = 8083
    "emqx-wss-backend"   = 8084
  }
  health_port = 8080
  health_path = "/haproxy_health"
  dns_name    = "mqtt.${var.domain}"
}

resource "oci_network_load_balancer_network_load_balancer" "this" {
  compartment_id             = var.compartment_id
  display_name               = var.display_name
  subnet_id                  = var.subnet_id
  is_private                 = var.is_private
  network_security_group_ids = var.nsg_ids
  freeform_tags              = var.freeform_tags
}

resource "oci_network_load_balancer_backend_set" "this" {
  for_each = local.backend_sets

  network_load_balancer_id = oci_network_load_balancer_network_load_balancer.this.id
  name                     = each.key
  # A network load balancer hashes flows: FIVE_TUPLE, THREE_TUPLE or TWO_TUPLE. There is no
  # LEAST_CONNECTIONS here (that is the classic load balancer); see deploy/README.md.
  policy             = var.backend_policy
  is_preserve_source = true

  health_checker {
    protocol           = "HTTP"
    port               = local.health_port
    url_path           = local.health_path
    return_code        = 200
    interval_in_millis = 10000
    timeout_in_millis  = 3000
    retries            = 3
  }
}

resource "oci_network_load_balancer_listener" "this" {
  for_each = local.backend_sets

  network_load_balancer_id = oci_network_load_balancer_network_load_balancer.this.id
  name                     = replace(each.key, "-backend", "-listener")
  default_backend_set_name = oci_network_load_balancer_backend_set.this[each.key].name
  port                     = each.value
  protocol                 = "TCP"
}

# mqtt.<domain> -> the load balancer's address.
resource "oci_dns_rrset" "mqtt" {
  zone_name_or_id = var.dns_zone_name_or_id
  compartment_id  = var.compartment_id
  domain          = local.dns_name
  rtype           = "A"

  items {
    domain = local.dns_name
    rtype  = "A"
    rdata  = oci_network_load_balancer_network_load_balancer.this.ip_addresses[0].ip_address
    ttl    = var.dns_ttl
  }
}

# Network security groups for the EMQX pool and its network load balancer.
#
# Two NSGs: `lb` is attached to the network load balancer, `emqx` to every EMQX instance
# (the instance configuration's VNIC). The NLB preserves the client source address, so the
# client ports are opened on both.

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
  # The public MQTT ports; brokerside listens on them and relays to the local broker.
  client_ports = {
    mqtt  = 1883
    mqtts = 8883
    ws    = 8083
    wss   = 8084
  }
  # The EMQX dashboard and HTTP API: reachable from inside the VCN only.
  dashboard_port = 18083
  # Erlang distribution (ekka) and cluster RPC (gen_rpc): between EMQX nodes only.
  cluster_ports = {
    erlang-distribution = 4370
    cluster-rpc         = 5370
  }
  # brokerside's admin endpoint: the load balancer's health checks (GET /haproxy_health).
  health_port = 8080

  client_rules = {
    for pair in setproduct(var.client_cidrs, keys(local.client_ports)) :
    "${pair[1]}-${pair[0]}" => { cidr = pair[0], port = local.client_ports[pair[1]] }
  }
}

resource "oci_core_network_security_group" "lb" {
  compartment_id = var.compartment_id
  vcn_id         = var.vcn_id
  display_name   = "${var.name_prefix}-lb"
  freeform_tags  = var.freeform_tags
}

resource "oci_core_network_security_group" "emqx" {
  compartment_id = var.compartment_id
  vcn_id         = var.vcn_id
  display_name   = "${var.name_prefix}-pool"
  freeform_tags  = var.freeform_tags
}

# Clients -> load balancer listeners.
resource "oci_core_network_security_group_security_rule" "lb_clients" {
  for_each = local.client_rules

  network_security_group_id = oci_core_network_security_group.lb.id
  description               = "MQTT ${each.key} from clients to the load balancer"
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "CIDR_BLOCK"
  source                    = each.value.cidr
  tcp_options {
    destination_port_range {
      min = each.value.port
      max = each.value.port
    }
  }
}

# Load balancer -> EMQX nodes: the client ports and the health port.
resource "oci_core_network_security_group_security_rule" "lb_to_pool" {
  for_each = merge(local.client_ports, { health = local.health_port })

  network_security_group_id = oci_core_network_security_group.lb.id
  description               = "${each.key} from the load balancer to the EMQX pool"
  direction                 = "EGRESS"
  protocol                  = "6"
  destination_type          = "NETWORK_SECURITY_GROUP"
  destination               = oci_core_network_security_group.emqx.id
  tcp_options {
    destination_port_range {
      min = each.value
      max = each.value
    }
  }
}

# Clients -> EMQX nodes (the NLB preserves the client source address, so the backends see it).
resource "oci_core_network_security_group_security_rule" "clients" {
  for_each = local.client_rules

  network_security_group_id = oci_core_network_security_group.emqx.id
  description               = "MQTT ${each.key} from clients"
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "CIDR_BLOCK"
  source                    = each.value.cidr
  tcp_options {
    destination_port_range {
      min = each.value.port
      max = each.value.port
    }
  }
}

# Dashboard / HTTP API from the VCN only.
resource "oci_core_network_security_group_security_rule" "dashboard" {
  network_security_group_id = oci_core_network_security_group.emqx.id
  description               = "EMQX dashboard and API from the VCN"
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "CIDR_BLOCK"
  source                    = var.vcn_cidr
  tcp_options {
    destination_port_range {
      min = local.dashboard_port
      max = local.dashboard_port
    }
  }
}

# Erlang distribution and cluster RPC from the pool's own NSG only.
resource "oci_core_network_security_group_security_rule" "cluster" {
  for_each = local.cluster_ports

  network_security_group_id = oci_core_network_security_group.emqx.id
  description               = "EMQX ${each.key} between EMQX nodes"
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "NETWORK_SECURITY_GROUP"
  source                    = oci_core_network_security_group.emqx.id
  tcp_options {
    destination_port_range {
      min = each.value
      max = each.value
    }
  }
}

# Health checks from the load balancer to brokerside's admin port.
resource "oci_core_network_security_group_security_rule" "health" {
  network_security_group_id = oci_core_network_security_group.emqx.id
  description               = "brokerside /haproxy_health from the load balancer"
  direction                 = "INGRESS"
  protocol                  = "6"
  source_type               = "NETWORK_SECURITY_GROUP"
  source                    = oci_core_network_security_group.lb.id
  tcp_options {
    destination_port_range {
      min = local.health_port
      max = local.health_port
    }
  }
}

# EMQX nodes talk to each other, Consul, Nomad servers and package mirrors.
resource "oci_core_network_security_group_security_rule" "pool_egress" {
  network_security_group_id = oci_core_network_security_group.emqx.id
  description               = "all egress from the EMQX pool"
  direction                 = "EGRESS"
  protocol                  = "all"
  destination_type          = "CIDR_BLOCK"
  destination               = "0.0.0.0/0"
}

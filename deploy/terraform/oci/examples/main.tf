# Example root module: the whole EMQX + brokerside stack on OCI, in deployment order.
#
#   1. security group  2. network load balancer  3. volumes  4. instance pools  5. Nomad jobs
#
# Terraform orders the work by references; the order below is the order the references impose.
# See deploy/README.md for how to apply it (the Nomad jobs need the Nomad servers reachable).

terraform {
  required_version = ">= 1.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.19.0"
    }
    nomad = {
      source  = "hashicorp/nomad"
      version = ">= 2.0.0"
    }
  }
}

provider "oci" {
  region = var.region
}

provider "nomad" {
  address = var.nomad_address
}

data "oci_identity_availability_domains" "this" {
  compartment_id = var.tenancy_ocid
}

locals {
  availability_domains = [for ad in data.oci_identity_availability_domains.this.availability_domains : ad.name]
}

# 1. Network security groups.
module "security_group" {
  source = "../emqx-load-balancer-security-group"

  compartment_id = var.compartment_id
  vcn_id         = var.vcn_id
  vcn_cidr       = var.vcn_cidr
  client_cidrs   = var.client_cidrs
}

# 2. Network load balancer, its backend sets and listeners, mqtt.<domain>.
module "network_load_balancer" {
  source = "../emqx-network-load-balancer"

  compartment_id      = var.compartment_id
  subnet_id           = var.lb_subnet_id
  nsg_ids             = [module.security_group.lb_nsg_id]
  domain              = var.domain
  dns_zone_name_or_id = var.dns_zone_name_or_id
}

# 3. One block volume per EMQX node.
module "volumes" {
  source = "../volumes-emqx"

  compartment_id       = var.compartment_id
  availability_domains = local.availability_domains
  volume_count         = var.emqx_count
}

# 4. One instance pool of size 1 per EMQX node, attached to the backend sets.
module "instance_pools" {
  source = "../emqx-instance-pool"

  compartment_id              = var.compartment_id
  pool_count                  = var.emqx_count
  availability_domains        = local.availability_domains
  volume_ids                  = module.volumes.volume_ids
  volume_availability_domains = module.volumes.availability_domains
  subnet_id                   = var.pool_subnet_id
  nsg_ids                     = [module.security_group.emqx_nsg_id]
  image_id                    = var.image_id
  ssh_authorized_keys         = var.ssh_authorized_keys
  load_balancer_id            = module.network_load_balancer.load_balancer_id
  backend_sets                = module.network_load_balancer.backend_sets
  consul_retry_join           = var.consul_retry_join
}

# 5. The Nomad jobs: EMQX, then brokerside in front of it.
module "emqx" {
  source = "../../../nomad/modules/emqx"

  emqx_count    = var.emqx_count
  erlang_cookie = var.erlang_cookie

  depends_on = [module.instance_pools]
}

module "brokerside" {
  source = "../../../nomad/modules/brokerside"

  brokerside_image = var.brokerside_image
  # TLS termination in brokerside (deploy/README.md, TLS termination): the certificate from
  # Vault's PKI names the load balancer's mqtt.<domain>.
  tls_termination = var.brokerside_tls_termination
  tls_common_name = module.network_load_balancer.dns_name

  depends_on = [module.emqx]
}

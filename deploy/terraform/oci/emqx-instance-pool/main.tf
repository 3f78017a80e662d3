# N instance configurations and N instance pools of size 1 for the EMQX nodes.
#
# Pool i (tag group-index = i) runs in availability domain element(availability_domains, i),
# attaches the block volume of index i (created by volumes-emqx in the same domain), formats it
# ext4 on first boot, mounts it at /mnt/bv/emqx-i and links /opt/nomad/data/emqx-i to it, then
# starts the Nomad client with meta pool_type = "emqx". Every pool is attached to the four backend
# sets of the network load balancer, each on the port its traffic goes to.

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
  availability_domains = [for i in range(var.pool_count) : element(var.availability_domains, i)]
}

resource "oci_core_instance_configuration" "emqx" {
  count = var.pool_count

  compartment_id = var.compartment_id
  display_name   = "${var.name_prefix}-${count.index}"
  freeform_tags  = merge(var.freeform_tags, { "group-index" = tostring(count.index) })

  instance_details {
    instance_type = "compute"

    launch_details {
      compartment_id      = var.compartment_id
      availability_domain = local.availability_domains[count.index]
      shape               = var.shape
      display_name        = "${var.name_prefix}-${count.index}"
      freeform_tags       = merge(var.freeform_tags, { "group-index" = tostring(count.index) })

      shape_config {
        ocpus         = var.ocpus
        memory_in_gbs = var.memory_in_gbs
      }

      create_vnic_details {
        subnet_id        = var.subnet_id
        nsg_ids          = var.nsg_ids
        assign_public_ip = false
      }

      source_details {
        source_type = "image"
        image_id    = var.image_id
      }

      metadata = {
        ssh_authorized_keys = var.ssh_authorized_keys
        user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
          group_index       = count.index
          device_path       = var.device_path
          nomad_datacenter  = var.nomad_datacenter
          max_kill_timeout  = var.nomad_max_kill_timeout
          consul_retry_join = jsonencode(var.consul_retry_join)
        }))
      }
    }

    block_volumes {
      volume_id = var.volume_ids[count.index]
      attach_details {
        type         = "paravirtualized"
        device       = var.device_path
        display_name = "${var.name_prefix}-${count.index}"
      }
    }
  }

  lifecycle {
    create_before_destroy = true
    precondition {
      condition     = var.volume_availability_domains[count.index] == local.availability_domains[count.index]
      error_message = "The volume of each group-index must be in the availability domain of the pool of the same index."
    }
  }
}

resource "oci_core_instance_pool" "emqx" {
  count = var.pool_count

  compartment_id            = var.compartment_id
  instance_configuration_id = oci_core_instance_configuration.emqx[count.index].id
  display_name              = "${var.name_prefix}-${count.index}"
  # One node per pool: the pool owns exactly one volume.
  size          = 1
  freeform_tags = merge(var.freeform_tags, { "group-index" = tostring(count.index) })

  placement_configurations {
    availability_domain = local.availability_domains[count.index]
    primary_subnet_id   = var.subnet_id
  }

  # load_balancers.port is the port the NLB sends this backend set's traffic to (1883 for the
  # mqtt set, ...), not the health-check port; see deploy/README.md.
  dynamic "load_balancers" {
    for_each = var.backend_sets
    content {
      load_balancer_id = var.load_balancer_id
      backend_set_name = load_balancers.key
      port             = load_balancers.value
      vnic_selection   = "PrimaryVnic"
    }
  }
}

data "oci_core_instance_pool_instances" "emqx" {
  count = var.pool_count

  compartment_id   = var.compartment_id
  instance_pool_id = oci_core_instance_pool.emqx[count.index].id
}

data "oci_core_instance" "emqx" {
  count = var.pool_count

  instance_id = data.oci_core_instance_pool_instances.emqx[count.index].instances[0].id
}

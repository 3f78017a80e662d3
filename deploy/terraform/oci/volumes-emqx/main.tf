# Block volumes for the EMQX data directories, one per instance pool.
#
# Volume i lives in availability domain element(availability_domains, i): the same round-robin
# the emqx-instance-pool module uses for pool i, so each pool can attach the volume of its index.

terraform {
  required_version = ">= 1.3"
  required_providers {
    oci = {
      source  = "oracle/oci"
      version = ">= 7.19.0"
    }
  }
}

resource "oci_core_volume" "emqx" {
  count = var.volume_count

  compartment_id      = var.compartment_id
  availability_domain = element(var.availability_domains, count.index)
  display_name        = "${var.name_prefix}-${count.index}"
  size_in_gbs         = var.size_in_gbs
  vpus_per_gb         = var.vpus_per_gb
  freeform_tags = merge(var.freeform_tags, {
    "volume-role"  = "emqx"
    "volume-index" = tostring(count.index)
  })

  lifecycle {
    # The volume holds the broker's data (retained messages, sessions): never replace it by accident.
    prevent_destroy = true
  }
}

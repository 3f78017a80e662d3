# Submits the EMQX job (jobspec.nomad.hcl) to Nomad. The jobspec is plain Nomad HCL2: its
# variables are passed through hcl2.vars, so `nomad job run -var ...` runs the same file.

terraform {
  required_version = ">= 1.3"
  required_providers {
    nomad = {
      source  = "hashicorp/nomad"
      version = ">= 2.0.0"
    }
  }
}

resource "nomad_job" "emqx" {
  jobspec = file("${path.module}/jobspec.nomad.hcl")

  hcl2 {
    vars = {
      emqx_count    = tostring(var.emqx_count)
      datacenters   = jsonencode(var.datacenters)
      emqx_image    = var.emqx_image
      erlang_cookie = var.erlang_cookie
      dns_name      = var.dns_name
    }
  }
}

# Submits the brokerside job (jobspec.nomad.hcl) to Nomad: a system job, so one brokerside runs
# on every EMQX node (client meta pool_type = "emqx").

terraform {
  required_version = ">= 1.3"
  required_providers {
    nomad = {
      source  = "hashicorp/nomad"
      version = ">= 2.0.0"
    }
  }
}

resource "nomad_job" "brokerside" {
  jobspec = file("${path.module}/jobspec.nomad.hcl")

  hcl2 {
    vars = {
      datacenters        = jsonencode(var.datacenters)
      brokerside_image   = var.brokerside_image
      consul_kv_prefix   = var.consul_kv_prefix
      tls_termination    = tostring(var.tls_termination)
      tls_pki_issue_path = var.tls_pki_issue_path
      tls_common_name    = var.tls_common_name
      tls_ttl            = var.tls_ttl
      tls_client_ca      = var.tls_client_ca
      vault_role         = var.vault_role
    }
  }
}

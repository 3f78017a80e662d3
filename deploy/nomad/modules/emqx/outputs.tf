output "job_id" {
  description = "ID of the Nomad job."
  value       = nomad_job.emqx.id
}

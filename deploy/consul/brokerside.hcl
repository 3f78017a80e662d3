# Consul agent service definition for brokerside where it runs outside Nomad (systemd on a
# VM). Put it in the agent's config dir (e.g. /etc/consul.d/) and `consul reload`.
# Under Nomad the brokerside job registers the same service and check itself.
service {
  name = "brokerside"
  id   = "brokerside"
  port = 1883
  tags = ["emqx", "mqtt"]

  meta = {
    pool_type = "emqx"
  }

  checks = [
    {
      id       = "brokerside-haproxy-health"
      name     = "brokerside /haproxy_health on :8080"
      http     = "http://127.0.0.1:8080/haproxy_health"
      method   = "GET"
      interval = "10s"
      timeout  = "2s"
    },
    {
      id       = "brokerside-livez"
      name     = "brokerside /livez on :8080"
      http     = "http://127.0.0.1:8080/livez"
      method   = "GET"
      interval = "30s"
      timeout  = "2s"
    }
  ]
}

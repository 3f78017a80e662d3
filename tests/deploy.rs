//! deploy/: the OCI Terraform modules, Nomad jobs, Consul and Kubernetes manifests, checked
//! offline (no terraform or nomad binary is available where the tests run).
//!
//! - `hcl_check` resolves references, module arguments, file paths and checks every `oci_*`
//!   block against the provider schema subset in `deploy/schema/`.
//! - The tests below assert the values the source documents fix (ports, names, paths, tags).
//! - A known-bad tree (`tests/fixtures/deploy-bad/`) must be rejected with each expected error.
//! - Every brokerside config embedded in deploy/ passes `brokerside check-config`.
//! - The Nomad template reads its live tunables from Consul KV (`keyOrDefault`, rendered here
//!   with its default), none that needs a restart, and a bad KV value makes a refused config.
//! - TLS termination: the Nomad job's certificate comes from Vault's PKI (`pkiCert`, answered
//!   here by a test CA) into the task's secrets dir and reloads by SIGHUP; the Kubernetes one
//!   from a `kubernetes.io/tls` Secret mounted as a directory. `check-config` reads those files,
//!   so the configs are checked against real certificate files written where they would be.
//!
//! The Kubernetes manifests are also checked by `kubernetes-validate --strict` and yamllint in
//! `.ci/deploy-checks.sh`.

#[path = "deploy/hcl_check.rs"]
mod hcl_check;
// The test CA of the TLS tests (rcgen): it stands in for Vault's PKI and for cert-manager.
#[path = "support/tls.rs"]
#[allow(dead_code)]
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;

use hcl::expr::Expression;
use hcl::{Block, Body};
use hcl_check::{Module, Schema, attr, check_tree, labels, parse_file, template_text};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn schema() -> Schema {
    Schema::load(&deploy("schema/oci-7.19.0-subset.json")).unwrap_or_else(|e| panic!("{e}"))
}

fn module(rel: &str) -> Module {
    Module::load(&deploy(rel)).unwrap_or_else(|e| panic!("{}", e.join("\n")))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The block `kind "labels..."` of a module, or a panic naming it.
fn block<'a>(m: &'a Module, kind: &str, want: &[&str]) -> &'a Block {
    m.block(kind, want)
        .unwrap_or_else(|| panic!("{}: no {kind} {want:?}", m.dir.display()))
}

/// The first nested block `name` of a body (also the content of `dynamic "name"`).
fn sub<'a>(body: &'a Body, name: &str) -> &'a Body {
    body.blocks()
        .find_map(|b| match b.identifier.as_str() {
            "dynamic" if labels(b) == [name] => b
                .body
                .blocks()
                .find(|c| c.identifier.as_str() == "content")
                .map(|c| &c.body),
            id if id == name => Some(&b.body),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no block {name} in {body:?}"))
}

/// Attribute `key` of `body` formatted as HCL source (`var.x`, `"emqx"`, `1`).
fn text(body: &Body, key: &str) -> String {
    let e = attr(body, key).unwrap_or_else(|| panic!("no attribute {key} in {body:?}"));
    hcl::format::to_string(e).unwrap_or_else(|err| panic!("{key}: {err}"))
}

/// Attribute `key` of `body` as a value (literals only; anything else as its source text).
fn value(body: &Body, key: &str) -> hcl::Value {
    let e = attr(body, key).unwrap_or_else(|| panic!("no attribute {key} in {body:?}"));
    hcl::Value::from(e.clone())
}

fn local(m: &Module, name: &str) -> hcl::Value {
    let e = m
        .locals
        .get(name)
        .unwrap_or_else(|| panic!("{}: no local {name}", m.dir.display()));
    hcl::Value::from(e.clone())
}

/// A local's expression formatted as HCL source.
fn local_text(m: &Module, name: &str) -> String {
    let e = m
        .locals
        .get(name)
        .unwrap_or_else(|| panic!("{}: no local {name}", m.dir.display()));
    hcl::format::to_string(e).unwrap_or_else(|err| panic!("local.{name}: {err}"))
}

fn object(pairs: &[(&str, i64)]) -> hcl::Value {
    hcl::Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), hcl::Value::from(*v)))
            .collect(),
    )
}

/// Seconds of a duration string ("150s", "2m").
fn seconds(text: &str) -> u64 {
    let (num, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = num
        .parse()
        .unwrap_or_else(|e| panic!("duration {text:?}: {e}"));
    match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        other => panic!("duration {text:?}: unit {other:?}"),
    }
}

/// The `[drain] deadline` of a brokerside config (the documented default when absent).
fn drain_deadline(config: &str) -> u64 {
    let table: toml::Table = config
        .parse()
        .unwrap_or_else(|e| panic!("config: {e}\n{config}"));
    let deadline = table
        .get("drain")
        .and_then(|d| d.get("deadline"))
        .and_then(|d| d.as_str())
        .unwrap_or("120s");
    seconds(deadline)
}

#[test]
fn deploy_tree_passes_the_validator() {
    let (errors, stats) = check_tree(&repo().join("deploy"), &schema());
    assert!(
        errors.is_empty(),
        "deploy/ has problems:\n{}",
        errors.join("\n")
    );
    // Not vacuous: the walk saw every module, the oci blocks and the jobspecs.
    assert_eq!(stats.modules, 7, "modules checked (5 OCI, 2 Nomad)");
    assert!(
        stats.oci_blocks >= 15,
        "only {} oci blocks checked",
        stats.oci_blocks
    );
    assert!(
        stats.references >= 100,
        "only {} references resolved",
        stats.references
    );
    assert_eq!(stats.jobspecs, 2, "jobspecs checked");
}

#[test]
fn schema_subset_holds_exactly_the_types_deploy_uses() {
    let schema = schema();
    let (_, stats) = check_tree(&repo().join("deploy"), &schema);
    for kind in ["resource", "data"] {
        let used: std::collections::BTreeSet<String> = stats
            .oci_types
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, t)| t.clone())
            .collect();
        assert_eq!(
            schema.types(kind),
            used,
            "deploy/schema/oci-7.19.0-subset.json is stale ({kind}); regenerate it as deploy/README.md says"
        );
    }
}

#[test]
fn bad_fixture_tree_is_rejected_with_each_expected_error() {
    let (errors, _) = check_tree(&repo().join("tests/fixtures/deploy-bad"), &schema());
    let all = errors.join("\n");
    eprintln!("validator output for the bad tree:\n{all}");
    let expected = [
        // wrong attribute on an oci_ resource (size_in_gb for size_in_gbs)
        "oci_core_volume.data: unsupported argument size_in_gb",
        // wrong nested block
        "oci_network_load_balancer_backend_set.mqtt: unsupported block health_check",
        // required argument of an oci_ resource missing
        "oci_core_volume.data: missing required argument availability_domain",
        // required nested block missing
        "oci_network_load_balancer_backend_set.mqtt: missing required block health_checker",
        // the classic load balancer's policy on a network load balancer
        "oci_network_load_balancer_backend_set.mqtt.policy = \"LEAST_CONNECTIONS\"",
        // missing required module argument
        "module volumes: missing required argument volume_count",
        "module volumes: unknown argument volume_size",
        // broken references
        "var.compartment is not declared",
        "local.ports is not declared",
        "resource oci_core_volume.missing is not declared",
        "module.volumes.volume_id: the module has no output volume_id",
        "data.oci_identity_availability_domains.ads is not declared",
        "oci_core_volume.data.size: oci_core_volume exports no attribute size",
        // file paths and template variables
        "cloud-init.tftpl not found",
        "template interpolates ${device}",
        // Nomad: jobspec references and hcl2 vars
        "unresolved reference var.emqx_count",
        "unresolved reference local.greeting",
        "hcl2.vars.image is not a variable",
        "required jobspec variable cookie is not passed",
    ];
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|e| !all.contains(e))
        .collect();
    assert!(
        missing.is_empty(),
        "the validator missed:\n{}\n\nit reported:\n{all}",
        missing.join("\n")
    );
}

#[test]
fn security_group_opens_exactly_the_documented_ports() {
    let m = module("terraform/oci/emqx-load-balancer-security-group");
    assert_eq!(
        local(&m, "client_ports"),
        object(&[("mqtt", 1883), ("mqtts", 8883), ("ws", 8083), ("wss", 8084)])
    );
    assert_eq!(local(&m, "dashboard_port"), hcl::Value::from(18083));
    assert_eq!(
        local(&m, "cluster_ports"),
        object(&[("erlang-distribution", 4370), ("cluster-rpc", 5370)])
    );
    assert_eq!(local(&m, "health_port"), hcl::Value::from(8080));

    let rule = |name: &str| {
        &block(
            &m,
            "resource",
            &["oci_core_network_security_group_security_rule", name],
        )
        .body
    };
    let emqx_nsg = "oci_core_network_security_group.emqx.id";
    let lb_nsg = "oci_core_network_security_group.lb.id";
    // Client ports from the client CIDRs.
    let clients = rule("clients");
    assert_eq!(text(clients, "for_each"), "local.client_rules");
    assert_eq!(text(clients, "source"), "each.value.cidr");
    assert!(local_text(&m, "client_rules").contains("var.client_cidrs"));
    // 18083 from the VCN only.
    let dashboard = rule("dashboard");
    assert_eq!(text(dashboard, "source"), "var.vcn_cidr");
    assert_eq!(
        text(
            sub(sub(dashboard, "tcp_options"), "destination_port_range"),
            "min"
        ),
        "local.dashboard_port"
    );
    // 4370 / 5370 from the pool's own NSG only.
    let cluster = rule("cluster");
    assert_eq!(text(cluster, "for_each"), "local.cluster_ports");
    assert_eq!(text(cluster, "source"), emqx_nsg);
    assert_eq!(text(cluster, "network_security_group_id"), emqx_nsg);
    assert_eq!(
        value(cluster, "source_type"),
        hcl::Value::from("NETWORK_SECURITY_GROUP")
    );
    // 8080 from the load balancer.
    let health = rule("health");
    assert_eq!(text(health, "source"), lb_nsg);
    assert_eq!(text(health, "network_security_group_id"), emqx_nsg);
    assert_eq!(
        text(
            sub(sub(health, "tcp_options"), "destination_port_range"),
            "max"
        ),
        "local.health_port"
    );
    for name in ["clients", "dashboard", "cluster", "health"] {
        assert_eq!(
            value(rule(name), "direction"),
            hcl::Value::from("INGRESS"),
            "{name}"
        );
        assert_eq!(
            value(rule(name), "protocol"),
            hcl::Value::from("6"),
            "{name}: TCP"
        );
    }
}

#[test]
fn network_load_balancer_has_the_four_backend_sets_and_the_health_check() {
    let m = module("terraform/oci/emqx-network-load-balancer");
    assert_eq!(
        local(&m, "backend_sets"),
        object(&[
            ("emqx-mqtt-backend", 1883),
            ("emqx-mqtts-backend", 8883),
            ("emqx-ws-backend", 8083),
            ("emqx-wss-backend", 8084),
        ])
    );
    assert_eq!(local(&m, "health_port"), hcl::Value::from(8080));
    assert_eq!(
        local(&m, "health_path"),
        hcl::Value::from("/haproxy_health")
    );

    let set = &block(
        &m,
        "resource",
        &["oci_network_load_balancer_backend_set", "this"],
    )
    .body;
    assert_eq!(text(set, "for_each"), "local.backend_sets");
    assert_eq!(text(set, "name"), "each.key");
    assert_eq!(value(set, "is_preserve_source"), hcl::Value::Bool(true));
    assert_eq!(text(set, "policy"), "var.backend_policy");
    let policy_default = m.variables.get("backend_policy").cloned().flatten();
    assert_eq!(
        policy_default,
        Some(Expression::String("FIVE_TUPLE".into()))
    );
    let hc = sub(set, "health_checker");
    assert_eq!(value(hc, "protocol"), hcl::Value::from("HTTP"));
    assert_eq!(text(hc, "port"), "local.health_port");
    assert_eq!(text(hc, "url_path"), "local.health_path");
    assert_eq!(value(hc, "return_code"), hcl::Value::from(200));

    let listener = &block(
        &m,
        "resource",
        &["oci_network_load_balancer_listener", "this"],
    )
    .body;
    assert_eq!(text(listener, "for_each"), "local.backend_sets");
    assert_eq!(text(listener, "port"), "each.value");
    assert_eq!(value(listener, "protocol"), hcl::Value::from("TCP"));
    assert_eq!(
        text(listener, "default_backend_set_name"),
        "oci_network_load_balancer_backend_set.this[each.key].name"
    );

    assert_eq!(
        local(&m, "dns_name"),
        hcl::Value::from("mqtt.${var.domain}")
    );
    let rrset = &block(&m, "resource", &["oci_dns_rrset", "mqtt"]).body;
    assert_eq!(text(rrset, "domain"), "local.dns_name");
    for output in ["load_balancer_id", "backend_set_names", "backend_sets"] {
        assert!(m.outputs.contains(output), "output {output}");
    }
}

#[test]
fn volumes_are_tagged_and_placed_round_robin() {
    let m = module("terraform/oci/volumes-emqx");
    let volume = &block(&m, "resource", &["oci_core_volume", "emqx"]).body;
    assert_eq!(text(volume, "count"), "var.volume_count");
    assert_eq!(
        text(volume, "availability_domain"),
        "element(var.availability_domains, count.index)"
    );
    let tags = text(volume, "freeform_tags");
    assert!(tags.contains("\"volume-role\" = \"emqx\""), "{tags}");
    assert!(
        tags.contains("\"volume-index\" = tostring(count.index)"),
        "{tags}"
    );
}

#[test]
fn instance_pools_are_size_one_attached_on_traffic_ports_with_cloud_init() {
    let m = module("terraform/oci/emqx-instance-pool");
    // Same round-robin as the volumes, so pool i and volume i share an availability domain.
    assert_eq!(
        local_text(&m, "availability_domains"),
        "[for i in range(var.pool_count) : element(var.availability_domains, i)]"
    );
    let pool = &block(&m, "resource", &["oci_core_instance_pool", "emqx"]).body;
    assert_eq!(value(pool, "size"), hcl::Value::from(1));
    assert_eq!(text(pool, "count"), "var.pool_count");
    assert!(text(pool, "freeform_tags").contains("\"group-index\" = tostring(count.index)"));
    assert_eq!(
        text(sub(pool, "placement_configurations"), "availability_domain"),
        "local.availability_domains[count.index]"
    );
    // Each backend set on its own traffic port (1883, 8883, ...), never the health port.
    let lb = sub(pool, "load_balancers");
    assert_eq!(text(lb, "backend_set_name"), "load_balancers.key");
    assert_eq!(text(lb, "port"), "load_balancers.value");
    let examples = module("terraform/oci/examples");
    let call = &block(&examples, "module", &["instance_pools"]).body;
    assert_eq!(
        text(call, "backend_sets"),
        "module.network_load_balancer.backend_sets"
    );

    let config = &block(&m, "resource", &["oci_core_instance_configuration", "emqx"]).body;
    assert!(text(config, "freeform_tags").contains("\"group-index\" = tostring(count.index)"));
    let details = sub(config, "instance_details");
    let launch = sub(details, "launch_details");
    assert_eq!(
        text(launch, "availability_domain"),
        "local.availability_domains[count.index]"
    );
    assert!(
        text(launch, "metadata").contains("templatefile(\"${path.module}/cloud-init.yaml.tftpl\"")
    );
    assert_eq!(
        text(sub(details, "block_volumes"), "volume_id"),
        "var.volume_ids[count.index]"
    );
    for output in ["private_ips", "instance_pool_ids"] {
        assert!(m.outputs.contains(output), "output {output}");
    }

    let cloud_init = read(&deploy(
        "terraform/oci/emqx-instance-pool/cloud-init.yaml.tftpl",
    ));
    for needle in [
        "#cloud-config",
        "if ! blkid \"$DEV\"",
        "mkfs.ext4",
        "MNT=\"/mnt/bv/emqx-${group_index}\"",
        "LINK=\"/opt/nomad/data/emqx-${group_index}\"",
        "ln -sfn \"$MNT\" \"$LINK\"",
        "pool_type   = \"emqx\"",
        "path      = \"/opt/nomad/data/emqx-${group_index}\"",
        "max_kill_timeout",
    ] {
        assert!(
            cloud_init.contains(needle),
            "cloud-init template lacks {needle:?}"
        );
    }
}

#[test]
fn example_root_module_follows_the_deployment_order() {
    let m = module("terraform/oci/examples");
    let calls: Vec<(String, String)> = m
        .files
        .iter()
        .flat_map(|(_, body)| body.blocks())
        .filter(|b| b.identifier.as_str() == "module")
        .map(|b| (labels(b).join(""), text(&b.body, "source")))
        .collect();
    let expected = [
        ("security_group", "\"../emqx-load-balancer-security-group\""),
        ("network_load_balancer", "\"../emqx-network-load-balancer\""),
        ("volumes", "\"../volumes-emqx\""),
        ("instance_pools", "\"../emqx-instance-pool\""),
        ("emqx", "\"../../../nomad/modules/emqx\""),
        ("brokerside", "\"../../../nomad/modules/brokerside\""),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(calls, expected);
}

/// The jobspec of a Nomad module, its `job` block body.
fn job(service: &str) -> Body {
    let path = deploy(&format!("nomad/modules/{service}/jobspec.nomad.hcl"));
    let body = parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
    body.blocks()
        .find(|b| b.identifier.as_str() == "job")
        .map(|b| b.body.clone())
        .unwrap_or_else(|| panic!("{}: no job block", path.display()))
}

/// Static ports of a group's network block, by label.
fn static_ports(group: &Body) -> Vec<(String, i64)> {
    sub(group, "network")
        .blocks()
        .filter(|b| b.identifier.as_str() == "port")
        .map(|b| {
            let port = match value(&b.body, "static") {
                hcl::Value::Number(n) => n.as_i64().unwrap_or(-1),
                other => panic!("port {:?}: static {other:?}", labels(b)),
            };
            (labels(b).join(""), port)
        })
        .collect()
}

fn assert_pool_constraint(job: &Body) {
    let constraint = sub(job, "constraint");
    assert_eq!(
        value(constraint, "attribute"),
        hcl::Value::from("${meta.pool_type}")
    );
    assert_eq!(value(constraint, "value"), hcl::Value::from("emqx"));
}

#[test]
fn emqx_job_runs_on_the_emqx_pool_behind_brokerside() {
    let job = job("emqx");
    assert_pool_constraint(&job);
    let group = sub(&job, "group");
    assert_eq!(text(group, "count"), "var.emqx_count");
    let ports = static_ports(group);
    for (label, port) in [
        ("mqtt", 21883),
        ("mqtts", 28883),
        ("ws", 28083),
        ("wss", 28084),
    ] {
        assert!(
            ports.contains(&(label.to_string(), port)),
            "{label} on {port}: {ports:?}"
        );
    }
    let volume = sub(group, "volume");
    assert_eq!(value(volume, "type"), hcl::Value::from("host"));
    assert_eq!(value(volume, "source"), hcl::Value::from("emqx-data"));
    let service = sub(group, "service");
    assert_eq!(value(service, "name"), hcl::Value::from("emqx"));
    assert!(service.blocks().any(|b| b.identifier.as_str() == "check"));
    let env = sub(sub(group, "task"), "env");
    assert_eq!(
        value(env, "EMQX_LISTENERS__TCP__DEFAULT__BIND"),
        hcl::Value::from("0.0.0.0:21883")
    );
    assert_eq!(
        value(env, "EMQX_CLUSTER__DISCOVERY_STRATEGY"),
        hcl::Value::from("dns")
    );
    assert_eq!(text(env, "EMQX_CLUSTER__DNS__NAME"), "var.dns_name");
}

#[test]
fn brokerside_job_owns_the_public_ports_and_outlives_its_drain() {
    let job = job("brokerside");
    assert_pool_constraint(&job);
    assert_eq!(
        value(&job, "type"),
        hcl::Value::from("system"),
        "one per EMQX node"
    );
    let group = sub(&job, "group");
    let ports = static_ports(group);
    let expected: Vec<(String, i64)> = [
        ("mqtt", 1883),
        ("mqtts", 8883),
        ("ws", 8083),
        ("wss", 8084),
        ("admin", 8080),
    ]
    .iter()
    .map(|(l, p)| (l.to_string(), *p))
    .collect();
    assert_eq!(ports, expected);
    let check = sub(sub(group, "service"), "check");
    assert_eq!(value(check, "type"), hcl::Value::from("http"));
    assert_eq!(value(check, "path"), hcl::Value::from("/haproxy_health"));
    assert_eq!(value(check, "port"), hcl::Value::from("admin"));

    let task = sub(group, "task");
    // A re-rendered config is reloaded in-process (SIGHUP), not applied by a draining restart.
    let templates = nomad_brokerside_templates(&[]);
    let template = templates
        .iter()
        .find(|t| t.destination == CONFIG_DESTINATION)
        .unwrap_or_else(|| panic!("no template renders {CONFIG_DESTINATION}"));
    assert_eq!(template.change_mode.as_deref(), Some("signal"));
    assert_eq!(template.change_signal.as_deref(), Some("SIGHUP"));
    let kill = match value(task, "kill_timeout") {
        hcl::Value::String(s) => seconds(&s),
        other => panic!("kill_timeout {other:?}"),
    };
    let config = nomad_brokerside_config();
    let deadline = drain_deadline(&config);
    assert!(
        kill > deadline,
        "kill_timeout {kill}s must exceed the drain deadline {deadline}s"
    );
    // Nomad caps kill_timeout at the client's max_kill_timeout (cloud-init sets it).
    let pool = module("terraform/oci/emqx-instance-pool");
    let max_kill = match pool
        .variables
        .get("nomad_max_kill_timeout")
        .cloned()
        .flatten()
    {
        Some(Expression::String(s)) => seconds(&s),
        other => panic!("nomad_max_kill_timeout default: {other:?}"),
    };
    assert!(
        max_kill > kill,
        "client max_kill_timeout {max_kill}s must exceed kill_timeout {kill}s"
    );
}

#[test]
fn consul_service_checks_haproxy_health_on_8080() {
    let body = parse_file(&deploy("consul/brokerside.hcl")).unwrap_or_else(|e| panic!("{e}"));
    let service = sub(&body, "service");
    assert_eq!(value(service, "name"), hcl::Value::from("brokerside"));
    let checks = text(service, "checks");
    assert!(
        checks.contains("http = \"http://127.0.0.1:8080/haproxy_health\""),
        "{checks}"
    );
}

/// The value of a YAML block scalar `key: |` in `text`, dedented.
fn yaml_block_scalar(text: &str, key: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let header = lines.next()?;
    let base = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > base)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
            + "\n",
    )
}

#[test]
fn kubernetes_manifests_have_the_headless_service_sidecar_and_probes() {
    let service = read(&deploy("kubernetes/service.yaml"));
    for needle in ["clusterIP: None", "publishNotReadyAddresses: true"] {
        assert!(service.contains(needle), "service.yaml lacks {needle:?}");
    }
    let sts = read(&deploy("kubernetes/statefulset.yaml"));
    for needle in [
        "- name: brokerside",
        "fieldPath: metadata.name",
        "fieldPath: metadata.namespace",
        "fieldPath: status.podIP",
        "- name: POD_NAME",
        "- name: POD_NAMESPACE",
        "- name: POD_IP",
        "readinessProbe:\n            httpGet:\n              path: /readyz\n              port: 8080",
        "livenessProbe:\n            httpGet:\n              path: /livez\n              port: 8080",
        "name: brokerside\n",
    ] {
        assert!(sts.contains(needle), "statefulset.yaml lacks {needle:?}");
    }
    // A ConfigMap update reaches the pod only through a directory mount (a subPath mount never
    // sees one), and brokerside only learns of it through [runtime] watch_config (no signal).
    assert!(
        !sts.lines().any(|l| l.trim_start().starts_with("subPath")),
        "statefulset.yaml mounts with subPath"
    );
    assert!(
        sts.contains("- name: brokerside-config\n              mountPath: /etc/brokerside\n"),
        "statefulset.yaml: the ConfigMap is not mounted at /etc/brokerside"
    );
    assert!(
        sts.contains("- --config\n            - /etc/brokerside/brokerside.toml\n"),
        "statefulset.yaml: --config is not /etc/brokerside/brokerside.toml"
    );
    let config: toml::Table = configmap_config()
        .parse()
        .unwrap_or_else(|e| panic!("configmap.yaml brokerside.toml: {e}"));
    let watch = config
        .get("runtime")
        .and_then(|r| r.get("watch_config"))
        .and_then(|w| w.as_str())
        .unwrap_or_else(|| panic!("configmap.yaml: no [runtime] watch_config"));
    assert_eq!(watch, "10s");
    let grace: u64 = sts
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("statefulset.yaml: no terminationGracePeriodSeconds"));
    let deadline = drain_deadline(&configmap_config());
    assert!(
        grace > deadline,
        "terminationGracePeriodSeconds {grace} <= drain deadline {deadline}"
    );
}

fn configmap_config() -> String {
    let path = deploy("kubernetes/configmap.yaml");
    yaml_block_scalar(&read(&path), "brokerside.toml")
        .unwrap_or_else(|| panic!("{}: no brokerside.toml block", path.display()))
}

/// A jobspec's variables that have a default, as the values HCL interpolates (`var.<name>`).
fn jobspec_defaults(service: &str) -> hcl::Map<String, hcl::Value> {
    let path = deploy(&format!("nomad/modules/{service}/jobspec.nomad.hcl"));
    let body = parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
    body.blocks()
        .filter(|b| b.identifier.as_str() == "variable")
        .filter_map(|b| {
            let default = attr(&b.body, "default")?;
            Some((labels(b).join(""), hcl::Value::from(default.clone())))
        })
        .collect()
}

/// What a jobspec's HCL expressions read: `var.<name>`, each variable's default or the value
/// `set` gives it (as `nomad job run -var`, or the module's `hcl2.vars`), and `local.<name>`,
/// its locals evaluated with those variables.
fn jobspec_context(service: &str, set: &[(&str, hcl::Value)]) -> hcl::eval::Context<'static> {
    use hcl::eval::Evaluate;
    let path = deploy(&format!("nomad/modules/{service}/jobspec.nomad.hcl"));
    let body = parse_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let declared = hcl_check::jobspec_variables(&body);
    let mut vars = jobspec_defaults(service);
    for (name, v) in set {
        assert!(
            declared.contains_key(*name),
            "{service} jobspec has no variable {name}"
        );
        vars.insert(name.to_string(), v.clone());
    }
    let mut ctx = hcl::eval::Context::new();
    ctx.declare_var("var", hcl::Value::Object(vars));
    let locals: hcl::Map<String, hcl::Value> = hcl_check::jobspec_locals(&body)
        .into_iter()
        .map(|(name, e)| {
            let v = e
                .evaluate(&ctx)
                .unwrap_or_else(|err| panic!("local.{name}: {err}"));
            (name, v)
        })
        .collect();
    ctx.declare_var("local", hcl::Value::Object(locals));
    ctx
}

/// The bodies of the blocks `name` in `body` as Nomad expands them in `ctx`: a plain block
/// once, a `dynamic "name"` block's content once per element of its `for_each` (none when the
/// condition makes it `[]`). The content must not read its iterator.
fn expanded_blocks(body: &Body, name: &str, ctx: &hcl::eval::Context<'_>) -> Vec<Body> {
    use hcl::eval::Evaluate;
    let mut out = Vec::new();
    for b in body.blocks() {
        if b.identifier.as_str() == name {
            out.push(b.body.clone());
        } else if b.identifier.as_str() == "dynamic" && labels(b) == [name] {
            let for_each =
                attr(&b.body, "for_each").unwrap_or_else(|| panic!("dynamic {name}: no for_each"));
            let n = match for_each.evaluate(ctx) {
                Ok(hcl::Value::Array(items)) => items.len(),
                other => panic!("dynamic {name}: for_each = {other:?}"),
            };
            let content = sub(&b.body, "content");
            out.extend(std::iter::repeat_n(content.clone(), n));
        }
    }
    out
}

/// Attribute `key` of `body` evaluated in `ctx`, as a string.
fn eval_string(body: &Body, key: &str, ctx: &hcl::eval::Context<'_>) -> Option<String> {
    use hcl::eval::Evaluate;
    let e = attr(body, key)?;
    match e.evaluate(ctx) {
        Ok(hcl::Value::String(s)) => Some(s),
        other => panic!("{key}: evaluates to {other:?}"),
    }
}

/// A `template` block of the brokerside task as Nomad hands it to consul-template: its HCL
/// interpolations (`${var.consul_kv_prefix}`, `%{ if var.tls_termination }`) evaluated with
/// the jobspec's variables. An interpolation of anything else fails here.
#[derive(Debug)]
struct NomadTemplate {
    destination: String,
    change_mode: Option<String>,
    change_signal: Option<String>,
    data: String,
}

/// The brokerside task: its body and every template it has with variables `set` (the rest at
/// their defaults).
fn nomad_brokerside_templates(set: &[(&str, hcl::Value)]) -> Vec<NomadTemplate> {
    let vars = jobspec_context("brokerside", set);
    let job = job("brokerside");
    let task = sub(sub(&job, "group"), "task");
    expanded_blocks(task, "template", &vars)
        .iter()
        .map(|t| {
            let data = attr(t, "data").unwrap_or_else(|| panic!("template without data"));
            assert!(
                template_text(data).is_some() || matches!(data, Expression::Traversal(_)),
                "template.data is neither a string nor a variable"
            );
            NomadTemplate {
                destination: eval_string(t, "destination", &vars)
                    .unwrap_or_else(|| panic!("template without destination")),
                change_mode: eval_string(t, "change_mode", &vars),
                change_signal: eval_string(t, "change_signal", &vars),
                data: eval_string(t, "data", &vars).unwrap_or_default(),
            }
        })
        .collect()
}

/// Where the brokerside config is rendered (`--config /local/brokerside.toml`).
const CONFIG_DESTINATION: &str = "local/brokerside.toml";

/// The `data` of the brokerside config template with the jobspec variables' defaults, which
/// are also what the Terraform module passes unless told otherwise.
fn nomad_brokerside_template() -> String {
    let templates = nomad_brokerside_templates(&[]);
    templates
        .into_iter()
        .find(|t| t.destination == CONFIG_DESTINATION)
        .unwrap_or_else(|| panic!("no template renders {CONFIG_DESTINATION}"))
        .data
}

/// A value a Nomad template reads from Consul KV: `{{ keyOrDefault "<key>" "<default>" }}`.
#[derive(Debug, Clone, PartialEq)]
struct KvRead {
    key: String,
    default: String,
}

/// A certificate a Nomad template asks Vault's PKI for:
/// `{{ with pkiCert "<path>" "<key>=<value>" ... }}`.
#[derive(Debug, Clone, PartialEq)]
struct PkiRead {
    path: String,
    params: Vec<String>,
}

/// What Vault's PKI answers, as consul-template's pkiCert gives it: PEM text in the fields
/// `.Cert`, `.CA` and `.Key`.
#[derive(Debug, Clone)]
struct PkiCert {
    cert: String,
    ca: String,
    key: String,
}

/// A consul-template text rendered for this test, and what it read from Consul KV and Vault.
#[derive(Debug)]
struct Rendered {
    text: String,
    kv: Vec<KvRead>,
    pki: Vec<PkiRead>,
}

/// A word of a template action: a bare identifier, a Go double-quoted string, or a field of
/// the current value (`.Cert`).
#[derive(Debug, PartialEq)]
enum Word {
    Ident(String),
    Str(String),
    Field(String),
}

fn action_words(action: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = action.trim().chars().peekable();
    let ident = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        let mut s = String::new();
        while let Some(&c) = chars
            .peek()
            .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
        {
            s.push(c);
            chars.next();
        }
        s
    };
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => s.push(e),
                        other => return Err(format!("escape \\{other:?} is not supported here")),
                    },
                    Some(c) => s.push(c),
                    None => return Err("unterminated string".into()),
                }
            }
            words.push(Word::Str(s));
        } else if c == '.' {
            chars.next();
            let name = ident(&mut chars);
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                return Err("`.` without a field name is not supported here".into());
            }
            words.push(Word::Field(name));
        } else if c.is_ascii_alphabetic() {
            words.push(Word::Ident(ident(&mut chars)));
        } else {
            return Err(format!(
                "{c:?} (pipes, variables, trim markers, ...) is not supported here"
            ));
        }
    }
    Ok(words)
}

/// What a template reads from outside, as this test stands in for it.
struct Sources<'a> {
    /// The task's environment (`{{ env "NAME" }}`).
    env: &'a dyn Fn(&str) -> Option<String>,
    /// Consul KV (`keyOrDefault`): `None` when the key is absent.
    kv: &'a dyn Fn(&str) -> Option<String>,
    /// Vault's PKI (`pkiCert`): the certificate it issues for a path and its parameters.
    pki: &'a dyn Fn(&PkiRead) -> Result<PkiCert, String>,
}

/// Renders a consul-template text the way Nomad would, as far as this test knows how:
/// `{{ env "NAME" }}` becomes `env(NAME)` (an unknown name fails),
/// `{{ keyOrDefault "key" "default" }}` becomes `kv(key)`, or the default when that is `None`
/// (the key is absent from Consul), and `{{ with pkiCert "path" "k=v" ... }}` ... `{{ end }}`
/// renders its `{{ .Cert }}`, `{{ .CA }}` and `{{ .Key }}` from what `pki` issues. Any other
/// action fails, naming it, so that a new one has to be taught to this renderer on purpose.
fn render_consul_template(data: &str, sources: &Sources<'_>) -> Result<Rendered, String> {
    let mut text = String::new();
    let mut reads = Vec::new();
    let mut pki_reads = Vec::new();
    // The certificate of the open `with pkiCert` block, if any.
    let mut with: Option<PkiCert> = None;
    let mut rest = data;
    while let Some(open) = rest.find("{{") {
        text.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("unterminated template action {{{{{after}"))?;
        let action = &after[..close];
        let unknown = |why: String| {
            format!(
                "template action {{{{{action}}}}}: {why}; teach render_consul_template to render it"
            )
        };
        let words = action_words(action).map_err(unknown)?;
        let out = match (words.as_slice(), &with) {
            ([Word::Ident(f), Word::Str(name)], _) if f == "env" => (sources.env)(name)
                .ok_or_else(|| unknown(format!("env {name:?} is not known to this test")))?,
            ([Word::Ident(f), Word::Str(key), Word::Str(default)], _) if f == "keyOrDefault" => {
                reads.push(KvRead {
                    key: key.clone(),
                    default: default.clone(),
                });
                (sources.kv)(key).unwrap_or_else(|| default.clone())
            }
            ([Word::Ident(w), Word::Ident(f), Word::Str(path), params @ ..], None)
                if w == "with" && f == "pkiCert" =>
            {
                let mut read = PkiRead {
                    path: path.clone(),
                    params: Vec::new(),
                };
                for p in params {
                    match p {
                        Word::Str(kv) if kv.contains('=') => read.params.push(kv.clone()),
                        other => {
                            return Err(unknown(format!(
                                "pkiCert parameter {other:?} is not a \"key=value\" string"
                            )));
                        }
                    }
                }
                with = Some((sources.pki)(&read).map_err(unknown)?);
                pki_reads.push(read);
                String::new()
            }
            ([Word::Field(field)], Some(cert)) => match field.as_str() {
                "Cert" => cert.cert.clone(),
                "CA" => cert.ca.clone(),
                "Key" => cert.key.clone(),
                other => return Err(unknown(format!("pkiCert has no field {other}"))),
            },
            ([Word::Ident(e)], Some(_)) if e == "end" => {
                with = None;
                String::new()
            }
            _ => return Err(unknown("unknown action here".into())),
        };
        text.push_str(&out);
        rest = &after[close + 2..];
    }
    if with.is_some() {
        return Err("a {{ with pkiCert }} block has no {{ end }}".into());
    }
    text.push_str(rest);
    Ok(Rendered {
        text,
        kv: reads,
        pki: pki_reads,
    })
}

/// The environment Nomad gives the brokerside task on a node: `NOMAD_PORT_<label>` is the
/// static port of that label, `NOMAD_IP_<label>` the node's address (a sample one) and
/// `NOMAD_SECRETS_DIR` the task's secrets directory (`secrets`, when the test has one).
fn nomad_env(secrets: Option<&Path>) -> impl Fn(&str) -> Option<String> + use<'_> {
    let ports = static_ports(sub(&job("brokerside"), "group"));
    move |name: &str| {
        let port = |label: &str| {
            ports
                .iter()
                .find(|(l, _)| l == label)
                .map(|(_, p)| p.to_string())
        };
        if let Some(label) = name.strip_prefix("NOMAD_PORT_") {
            port(label)
        } else if let Some(label) = name.strip_prefix("NOMAD_IP_") {
            port(label).map(|_| "10.0.0.5".to_string())
        } else if name == "NOMAD_SECRETS_DIR" {
            secrets.map(|s| s.display().to_string())
        } else {
            None
        }
    }
}

fn kv_lookup<'a>(kv: &'a [(&str, &str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |key: &str| {
        kv.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    }
}

/// Renders the brokerside job's config template the way Nomad would on a node, with the
/// jobspec's default variables; each Consul KV key read has the value `kv` gives (`None`:
/// absent, so the default).
fn nomad_brokerside_render(kv: &[(&str, &str)]) -> Rendered {
    let env = nomad_env(None);
    let lookup = kv_lookup(kv);
    let no_vault = |read: &PkiRead| Err(format!("{read:?}: no Vault in this rendering"));
    let sources = Sources {
        env: &env,
        kv: &lookup,
        pki: &no_vault,
    };
    let rendered = render_consul_template(&nomad_brokerside_template(), &sources)
        .unwrap_or_else(|e| panic!("brokerside jobspec template: {e}"));
    for (key, _) in kv {
        assert!(
            rendered.kv.iter().any(|r| r.key == *key),
            "the template does not read {key}"
        );
    }
    rendered
}

/// The brokerside config as Nomad renders it while no tunable is set in Consul KV.
fn nomad_brokerside_config() -> String {
    nomad_brokerside_render(&[]).text
}

/// A Nomad task directory (`local/`, `secrets/`) of a test's own, removed when dropped.
struct TaskDir(PathBuf);

impl TaskDir {
    fn new(name: &str) -> TaskDir {
        let dir = std::env::temp_dir().join(format!(
            "brokerside-deploy-task-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in ["local", "secrets"] {
            std::fs::create_dir_all(dir.join(sub))
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        }
        TaskDir(dir)
    }

    fn secrets(&self) -> PathBuf {
        self.0.join("secrets")
    }
}

impl Drop for TaskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Vault's PKI secrets engine as this test stands in for it: a real CA (rcgen) that issues a
/// server certificate for the `common_name` a pkiCert call asks for.
struct TestVault {
    ca: tls::Pki,
    issued: std::cell::Cell<u64>,
}

impl Drop for TestVault {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.ca.dir);
    }
}

impl TestVault {
    fn new(name: &str) -> TestVault {
        TestVault {
            ca: tls::Pki::new(name),
            issued: std::cell::Cell::new(0),
        }
    }

    fn issue(&self, request: &PkiRead) -> Result<PkiCert, String> {
        let cn = request
            .params
            .iter()
            .find_map(|p| p.strip_prefix("common_name="))
            .ok_or("no common_name=")?;
        let serial = self.issued.get() + 1;
        self.issued.set(serial);
        let issued = self.ca.server(&format!("issued-{serial}"), &[cn], serial);
        Ok(PkiCert {
            cert: read(&issued.cert),
            ca: read(&self.ca.ca),
            key: read(&issued.key),
        })
    }
}

/// The brokerside task as Nomad renders it on a node into `task`, with variables `set`: every
/// template written to its destination (pkiCert answered by `vault`, no Consul KV key set),
/// and the rendered config.
fn nomad_brokerside_render_task(
    set: &[(&str, hcl::Value)],
    task: &TaskDir,
    vault: &TestVault,
) -> (Vec<(NomadTemplate, Rendered)>, String) {
    let secrets = task.secrets();
    let env = nomad_env(Some(&secrets));
    let lookup = kv_lookup(&[]);
    let pki = |read: &PkiRead| vault.issue(read);
    let sources = Sources {
        env: &env,
        kv: &lookup,
        pki: &pki,
    };
    let mut config = None;
    let mut out = Vec::new();
    for t in nomad_brokerside_templates(set) {
        let rendered = render_consul_template(&t.data, &sources)
            .unwrap_or_else(|e| panic!("template {}: {e}", t.destination));
        let path = task.0.join(&t.destination);
        std::fs::write(&path, &rendered.text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if t.destination == CONFIG_DESTINATION {
            config = Some(rendered.text.clone());
        }
        out.push((t, rendered));
    }
    let config = config.unwrap_or_else(|| panic!("no template renders {CONFIG_DESTINATION}"));
    (out, config)
}

#[test]
fn template_renderer_knows_env_key_or_default_and_pki_cert_and_refuses_the_rest() {
    let env = |name: &str| (name == "A").then(|| "1".to_string());
    let kv = |key: &str| (key == "p/set").then(|| "9".to_string());
    let pki = |read: &PkiRead| {
        (read.path == "pki/issue/r")
            .then(|| PkiCert {
                cert: "C".into(),
                ca: "A".into(),
                key: "K".into(),
            })
            .ok_or_else(|| format!("no role at {}", read.path))
    };
    let sources = Sources {
        env: &env,
        kv: &kv,
        pki: &pki,
    };
    let ok = render_consul_template(
        concat!(
            "a = {{ env \"A\" }}\n",
            "b = {{keyOrDefault \"p/unset\" \"2s\"}}\n",
            "c = {{ keyOrDefault \"p/set\" \"3\" }}\n",
            "{{ with pkiCert \"pki/issue/r\" \"common_name=m.example\" \"ttl=1h\" }}",
            "{{ .Cert }}{{ .CA }}{{.Key}}{{ end }}\n",
        ),
        &sources,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.text, "a = 1\nb = 2s\nc = 9\nCAK\n");
    assert_eq!(
        ok.kv,
        [
            KvRead {
                key: "p/unset".into(),
                default: "2s".into()
            },
            KvRead {
                key: "p/set".into(),
                default: "3".into()
            },
        ]
    );
    assert_eq!(
        ok.pki,
        [PkiRead {
            path: "pki/issue/r".into(),
            params: vec!["common_name=m.example".into(), "ttl=1h".into()],
        }]
    );
    for bad in [
        "{{ key \"p/x\" }}",
        "{{ keyOrDefault \"p/x\" }}",
        "{{ env \"B\" }}",
        "{{ keyOrDefault \"p/x\" \"1\" | toJSON }}",
        "{{- env \"A\" }}",
        "{{ $x := env \"A\" }}",
        "{{ range service \"emqx\" }}",
        "{{ env \"A\"",
        // pkiCert: its fields only inside its block, a block that ends, a role that exists.
        "{{ .Cert }}",
        "{{ end }}",
        "{{ with pkiCert \"pki/issue/r\" \"common_name=m\" }}{{ .Cert }}",
        "{{ with pkiCert \"pki/issue/r\" \"common_name=m\" }}{{ .Data.Cert }}{{ end }}",
        "{{ with pkiCert \"pki/issue/r\" \"common_name=m\" }}{{ .Serial }}{{ end }}",
        "{{ with pkiCert \"pki/issue/r\" ttl }}{{ end }}",
        "{{ with pkiCert \"pki/issue/other\" \"common_name=m\" }}{{ end }}",
        "{{ with secret \"pki/issue/r\" \"common_name=m\" }}{{ .Data.certificate }}{{ end }}",
    ] {
        let err = render_consul_template(bad, &sources)
            .err()
            .unwrap_or_else(|| panic!("{bad} was rendered"));
        assert!(
            err.contains("template action") || err.contains("no {{ end }}"),
            "{bad}: {err}"
        );
    }
}

/// The value at a Consul KV key's path in a config: the key without the prefix, split at `/`,
/// names tables and keys, and an array of tables (`[[listener]]`) is entered by `name`.
fn toml_at<'a>(config: &'a toml::Table, path: &str) -> Option<&'a toml::Value> {
    let mut segments = path.split('/');
    let mut here = config.get(segments.next()?)?;
    for segment in segments {
        here = match here {
            toml::Value::Table(t) => t.get(segment)?,
            toml::Value::Array(entries) => entries
                .iter()
                .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(segment))?,
            _ => return None,
        };
    }
    (!here.is_table() && !here.is_array()).then_some(here)
}

/// Config keys a live reload cannot take, or that another setting depends on: never from KV.
const NOT_FROM_KV: [(&str, &str, &str); 5] = [
    ("runtime", "relay_threads", "needs a restart"),
    ("admin", "listen", "needs a restart"),
    ("admin", "max_connections", "needs a restart"),
    ("admin", "header_timeout", "needs a restart"),
    ("drain", "deadline", "kill_timeout must outlast it"),
];

#[test]
fn brokerside_template_reads_its_tunables_from_consul_kv_with_defaults() {
    // The prefix: a jobspec variable, a module variable with the same default, passed through.
    let prefix = match jobspec_defaults("brokerside").get("consul_kv_prefix") {
        Some(hcl::Value::String(s)) => s.clone(),
        other => panic!("jobspec variable consul_kv_prefix: default {other:?}"),
    };
    assert_eq!(prefix, "brokerside");
    let m = module("nomad/modules/brokerside");
    assert_eq!(
        m.variables.get("consul_kv_prefix").cloned().flatten(),
        Some(Expression::String(prefix.clone())),
        "the module's consul_kv_prefix default differs from the jobspec's"
    );
    let nomad_job = &block(&m, "resource", &["nomad_job", "brokerside"]).body;
    let passed = match attr(sub(nomad_job, "hcl2"), "vars") {
        Some(Expression::Object(vars)) => vars
            .iter()
            .find(|(k, _)| {
                matches!(k, hcl::ObjectKey::Identifier(i) if i.as_str() == "consul_kv_prefix")
            })
            .map(|(_, v)| hcl::format::to_string(v).unwrap_or_default()),
        other => panic!("nomad_job.brokerside hcl2.vars: {other:?}"),
    };
    assert_eq!(passed.as_deref(), Some("var.consul_kv_prefix"));

    let rendered = nomad_brokerside_render(&[]);
    assert!(
        !rendered.kv.is_empty(),
        "the template reads nothing from Consul KV: Nomad would never re-render it"
    );
    let config: toml::Table = rendered
        .text
        .parse()
        .unwrap_or_else(|e| panic!("rendered config: {e}\n{}", rendered.text));
    let mut seen = std::collections::BTreeSet::new();
    for KvRead { key, default } in &rendered.kv {
        assert!(seen.insert(key.clone()), "{key} is read twice");
        let path = key
            .strip_prefix(&format!("{prefix}/"))
            .unwrap_or_else(|| panic!("{key} is not under {prefix}/"));
        // The key names the field it sets, and with no key set that field holds the default.
        let field = toml_at(&config, path)
            .unwrap_or_else(|| panic!("{key}: {path} is no field of the rendered config"));
        let shown = match field {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        assert_eq!(
            &shown, default,
            "{key}: the rendered field is not the default"
        );
        for (table, name, why) in NOT_FROM_KV {
            assert!(
                !(path.starts_with(&format!("{table}/")) && path.ends_with(&format!("/{name}"))),
                "{key}: {table}.{name} must not come from Consul KV ({why})"
            );
        }
        assert!(
            !path.starts_with("admin/") && !path.starts_with("runtime/"),
            "{key}: [admin] and [runtime] need a restart, not a KV change"
        );
    }
    // The tunables deploy/README.md and the jobspec's comment name.
    for path in [
        "drain/close_rate",
        "listener/mqtt/max_connections",
        "listener/mqtt/idle_timeout",
        "backend/broker-mqtt/check/interval",
        "backend/broker-mqtt/check/fall",
        "discovery/emqx/interval",
    ] {
        let key = format!("{prefix}/{path}");
        assert!(seen.contains(&key), "the template does not read {key}");
    }
    // And from the template's side: no line of [admin] or [runtime], nor drain.deadline, holds
    // a KV read, whatever key it names.
    let data = nomad_brokerside_template();
    let mut table = String::new();
    for line in data.lines().map(str::trim) {
        if line.starts_with('[') {
            table = line.trim_matches(|c| c == '[' || c == ']').to_string();
            continue;
        }
        if !line.contains("keyOrDefault") {
            continue;
        }
        let name = line.split('=').next().unwrap_or("").trim();
        assert!(
            table != "admin" && table != "runtime",
            "[{table}] {name} comes from Consul KV: it needs a restart"
        );
        assert!(
            !NOT_FROM_KV
                .iter()
                .any(|(t, n, _)| *t == table && *n == name),
            "{table}.{name} comes from Consul KV"
        );
    }
}

/// Runs `brokerside check-config` on `config`: `Err` with its output when it refuses it.
fn check_config(name: &str, config: &str) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("brokerside-deploy-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let out = Command::new(env!("CARGO_BIN_EXE_brokerside"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("running brokerside: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{name}: exit {:?}\nstdout: {}\nstderr: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn embedded_brokerside_configs_pass_check_config() {
    // check-config reads every TLS file: the Nomad job with TLS termination is rendered into a
    // task dir whose secrets dir gets Vault's (the test CA's) certificate, and the ConfigMap's
    // config sees the Secret's files where the StatefulSet mounts them.
    let nomad_task = TaskDir::new("embedded-nomad-tls");
    let vault = TestVault::new("embedded-vault");
    let (_, nomad_tls) = nomad_brokerside_render_task(
        &[("tls_termination", hcl::Value::Bool(true))],
        &nomad_task,
        &vault,
    );
    let mtls_task = TaskDir::new("embedded-nomad-mtls");
    let clients = tls::Pki::new("embedded-clients");
    let (_, nomad_mtls) = nomad_brokerside_render_task(
        &[
            ("tls_termination", hcl::Value::Bool(true)),
            ("tls_client_ca", hcl::Value::from(read(&clients.ca))),
        ],
        &mtls_task,
        &vault,
    );
    let secret = TaskDir::new("embedded-k8s-secret");
    let configs = [
        ("nomad-brokerside.toml", nomad_brokerside_config()),
        ("nomad-brokerside-tls.toml", nomad_tls),
        ("nomad-brokerside-mtls.toml", nomad_mtls),
        (
            "kubernetes-configmap.toml",
            configmap_config_with_secret(&secret.secrets()),
        ),
    ];
    let failures: Vec<String> = configs
        .iter()
        .filter_map(|(name, config)| check_config(name, config).err())
        .collect();
    let _ = std::fs::remove_dir_all(&clients.dir);
    assert!(
        failures.is_empty(),
        "check-config refused:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_tunable_put_in_consul_kv_reaches_the_config_and_a_bad_one_is_refused() {
    // `consul kv put brokerside/drain/close_rate 200`, as deploy/README.md shows.
    let set = nomad_brokerside_render(&[
        ("brokerside/drain/close_rate", "200"),
        ("brokerside/listener/mqtt/idle_timeout", "10m"),
        ("brokerside/backend/broker-mqtt/check/rise", "3"),
    ]);
    let config: toml::Table = set
        .text
        .parse()
        .unwrap_or_else(|e| panic!("rendered config: {e}\n{}", set.text));
    assert_eq!(
        toml_at(&config, "drain/close_rate"),
        Some(&toml::Value::Integer(200))
    );
    assert_eq!(
        toml_at(&config, "listener/mqtt/idle_timeout"),
        Some(&toml::Value::String("10m".into()))
    );
    check_config("nomad-kv-set.toml", &set.text).unwrap_or_else(|e| panic!("{e}"));
    // A bad value makes a file brokerside refuses (a reload keeps the running config): not
    // TOML at all, or a field that does not validate.
    for (key, bad, expect) in [
        ("brokerside/drain/close_rate", "fast", "TOML"),
        (
            "brokerside/backend/broker-mqtt/check/interval",
            "soon",
            "check.interval",
        ),
        (
            "brokerside/listener/wss/max_connections",
            "0",
            "max_connections",
        ),
    ] {
        let rendered = nomad_brokerside_render(&[(key, bad)]);
        let err = check_config("nomad-kv-bad.toml", &rendered.text)
            .err()
            .unwrap_or_else(|| panic!("{key} = {bad:?} was accepted"));
        assert!(err.contains(expect), "{key} = {bad:?}: {err}");
    }
}

/// Where the StatefulSet mounts the TLS Secret, and the Secret's name.
const K8S_TLS_MOUNT: &str = "/etc/brokerside/tls";
const K8S_TLS_SECRET: &str = "brokerside-tls";

/// The ConfigMap's config as the sidecar sees it with the `kubernetes.io/tls` Secret mounted:
/// the Secret's keys (`tls.crt`, `tls.key`, `ca.crt`, as cert-manager writes them, from a test
/// CA) are files in `dir`, which stands for the mount point the config names.
fn configmap_config_with_secret(dir: &Path) -> String {
    let pki = tls::Pki::new("k8s-issuer");
    let issued = pki.server("k8s", &["mqtt.example.com"], 7);
    for (key, from) in [
        ("tls.crt", &issued.cert),
        ("tls.key", &issued.key),
        ("ca.crt", &pki.ca),
    ] {
        std::fs::copy(from, dir.join(key)).unwrap_or_else(|e| panic!("{key}: {e}"));
    }
    let _ = std::fs::remove_dir_all(&pki.dir);
    let config = configmap_config();
    assert!(
        config.contains(&format!("\"{K8S_TLS_MOUNT}/")),
        "the ConfigMap's config names no file under {K8S_TLS_MOUNT}"
    );
    config.replace(
        &format!("\"{K8S_TLS_MOUNT}/"),
        &format!("\"{}/", dir.display()),
    )
}

/// The `servers` of backend `name` in a config.
fn backend_servers(config: &toml::Table, name: &str) -> Vec<String> {
    config
        .get("backend")
        .and_then(|b| b.as_array())
        .and_then(|all| {
            all.iter()
                .find(|b| b.get("name").and_then(|n| n.as_str()) == Some(name))
        })
        .and_then(|b| b.get("servers"))
        .and_then(|s| s.as_array())
        .unwrap_or_else(|| panic!("no backend {name} with servers"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

fn parse_config(text: &str) -> toml::Table {
    text.parse()
        .unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn tls_field<'a>(config: &'a toml::Table, listener: &str, key: &str) -> Option<&'a str> {
    toml_at(config, &format!("listener/{listener}/tls/{key}")).and_then(|v| v.as_str())
}

/// EMQX's port of a listener label in the EMQX job (`mqtt` 21883, `ws` 28083, ...).
fn emqx_port(label: &str) -> i64 {
    static_ports(sub(&job("emqx"), "group"))
        .into_iter()
        .find(|(l, _)| l == label)
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("EMQX job: no port {label}"))
}

/// Each backend's servers are the local EMQX's listener of that label (its port in the EMQX job).
fn assert_backends_reach_emqx<const N: usize>(config: &toml::Table, pairs: [(&str, &str); N]) {
    for (backend, label) in pairs {
        assert_eq!(
            backend_servers(config, backend),
            [format!("127.0.0.1:{}", emqx_port(label))],
            "{backend} must relay to EMQX's {label} listener"
        );
    }
}

/// The TLS variables of the brokerside job, which the Terraform module declares too.
const NOMAD_TLS_VARIABLES: [&str; 6] = [
    "tls_termination",
    "tls_pki_issue_path",
    "tls_common_name",
    "tls_ttl",
    "tls_client_ca",
    "vault_role",
];

#[test]
fn nomad_tls_termination_is_off_by_default_and_the_module_passes_its_variables() {
    let defaults = jobspec_defaults("brokerside");
    assert_eq!(
        defaults.get("tls_termination"),
        Some(&hcl::Value::Bool(false)),
        "TLS termination must be opt-in: existing users keep TLS passthrough"
    );
    let m = module("nomad/modules/brokerside");
    let nomad_job = &block(&m, "resource", &["nomad_job", "brokerside"]).body;
    let passed = match attr(sub(nomad_job, "hcl2"), "vars") {
        Some(Expression::Object(vars)) => vars.clone(),
        other => panic!("nomad_job.brokerside hcl2.vars: {other:?}"),
    };
    for name in NOMAD_TLS_VARIABLES {
        // The module's default is the jobspec's, and the module passes its variable through.
        let module_default = m
            .variables
            .get(name)
            .cloned()
            .flatten()
            .map(hcl::Value::from);
        assert_eq!(
            module_default.as_ref(),
            defaults.get(name),
            "{name}: the module's default differs from the jobspec's"
        );
        let shown = passed
            .iter()
            .find(|(k, _)| matches!(k, hcl::ObjectKey::Identifier(i) if i.as_str() == name))
            .map(|(_, v)| hcl::format::to_string(v).unwrap_or_default())
            .unwrap_or_else(|| panic!("hcl2.vars does not pass {name}"));
        assert!(
            shown == format!("var.{name}") || shown == format!("tostring(var.{name})"),
            "hcl2.vars.{name} = {shown}"
        );
    }

    // Off: no Vault, no certificate template, TLS passes through to EMQX's TLS listeners.
    let job = job("brokerside");
    let task = sub(sub(&job, "group"), "task");
    let ctx = jobspec_context("brokerside", &[]);
    assert!(expanded_blocks(task, "vault", &ctx).is_empty());
    let destinations: Vec<String> = nomad_brokerside_templates(&[])
        .into_iter()
        .map(|t| t.destination)
        .collect();
    assert_eq!(destinations, [CONFIG_DESTINATION]);
    let config = parse_config(&nomad_brokerside_config());
    for listener in ["mqtt", "mqtts", "ws", "wss"] {
        assert_eq!(tls_field(&config, listener, "cert"), None, "{listener}");
    }
    // TLS passes through to EMQX's TLS listeners.
    assert_backends_reach_emqx(&config, [("broker-mqtts", "mqtts"), ("broker-wss", "wss")]);
}

#[test]
fn nomad_tls_termination_serves_a_vault_pki_certificate_that_sighup_reloads() {
    let defaults = jobspec_defaults("brokerside");
    let default = |name: &str| match defaults.get(name) {
        Some(hcl::Value::String(s)) => s.clone(),
        other => panic!("jobspec variable {name}: default {other:?}"),
    };
    let clients = tls::Pki::new("nomad-clients");
    for mtls in [false, true] {
        let case = if mtls { "mtls" } else { "tls" };
        let task = TaskDir::new(&format!("nomad-{case}"));
        let vault = TestVault::new(&format!("vault-{case}"));
        let mut set = vec![("tls_termination", hcl::Value::Bool(true))];
        if mtls {
            set.push(("tls_client_ca", hcl::Value::from(read(&clients.ca))));
        }
        let (templates, text) = nomad_brokerside_render_task(&set, &task, &vault);

        // Every file the task renders is applied by SIGHUP (a reload: nobody reconnects),
        // never by a restart, which would drain the node.
        for (t, _) in &templates {
            assert_eq!(
                (t.change_mode.as_deref(), t.change_signal.as_deref()),
                (Some("signal"), Some("SIGHUP")),
                "{case}: template {}",
                t.destination
            );
        }
        // One certificate from Vault's PKI, with the module's path, common name and TTL.
        let pki: Vec<(&NomadTemplate, &PkiRead)> = templates
            .iter()
            .flat_map(|(t, r)| r.pki.iter().map(move |p| (t, p)))
            .collect();
        assert_eq!(
            pki.len(),
            1,
            "{case}: one pkiCert call, so certificate and key come from the same issue"
        );
        let (pem_template, request) = pki[0];
        assert_eq!(request.path, default("tls_pki_issue_path"));
        for param in [
            format!("common_name={}", default("tls_common_name")),
            format!("ttl={}", default("tls_ttl")),
        ] {
            assert!(
                request.params.contains(&param),
                "{case}: pkiCert without {param}"
            );
        }
        // Into the task's secrets dir (tmpfs), read by brokerside as both cert and key.
        assert!(
            pem_template.destination.starts_with("secrets/"),
            "{case}: the certificate goes to {}",
            pem_template.destination
        );
        let pem_file = task.0.join(&pem_template.destination);
        let pem_file = pem_file.display().to_string();
        let config = parse_config(&text);
        for listener in ["mqtts", "wss"] {
            assert_eq!(
                tls_field(&config, listener, "cert"),
                Some(pem_file.as_str())
            );
            assert_eq!(tls_field(&config, listener, "key"), Some(pem_file.as_str()));
            let client_ca = tls_field(&config, listener, "client_ca");
            let client_auth = tls_field(&config, listener, "client_auth");
            if mtls {
                let ca = client_ca.unwrap_or_else(|| panic!("{listener}: no client_ca"));
                assert!(ca.starts_with(&task.secrets().display().to_string()));
                assert_eq!(read(Path::new(ca)), read(&clients.ca));
                assert_eq!(client_auth, Some("required"));
            } else {
                assert_eq!((client_ca, client_auth), (None, None), "{listener}");
            }
        }
        for listener in ["mqtt", "ws"] {
            assert_eq!(tls_field(&config, listener, "cert"), None, "{listener}");
        }
        // Plaintext after termination, to EMQX's plain listeners, as mqtt's and ws's.
        assert_backends_reach_emqx(&config, [("broker-mqtts", "mqtt"), ("broker-wss", "ws")]);
        // The task asks Vault for a token of the role, and a new token restarts nothing.
        let job = job("brokerside");
        let task_body = sub(sub(&job, "group"), "task");
        let vars = jobspec_context("brokerside", &set);
        let vault_blocks = expanded_blocks(task_body, "vault", &vars);
        assert_eq!(vault_blocks.len(), 1, "{case}: vault blocks");
        assert_eq!(
            eval_string(&vault_blocks[0], "role", &vars),
            Some(default("vault_role"))
        );
        assert_eq!(
            eval_string(&vault_blocks[0], "change_mode", &vars).as_deref(),
            Some("noop")
        );

        check_config(&format!("nomad-{case}.toml"), &text).unwrap_or_else(|e| panic!("{e}"));
        // check-config reads that file: without the key (a Vault answer cut short) it refuses.
        let pem = read(Path::new(&pem_file));
        let cut = &pem[..pem.find("-----BEGIN PRIVATE KEY").expect("a PKCS#8 key")];
        std::fs::write(&pem_file, cut).unwrap_or_else(|e| panic!("{pem_file}: {e}"));
        let err = check_config(&format!("nomad-{case}-cut.toml"), &text)
            .err()
            .unwrap_or_else(|| panic!("{case}: a certificate file without its key was accepted"));
        assert!(err.contains("listener[1].tls.key"), "{case}: {err}");
    }
    let _ = std::fs::remove_dir_all(&clients.dir);
}

#[test]
fn vault_certificate_is_renewed_before_the_expiry_alert_fires() {
    // pkiCert fetches a new certificate once ~90% of its lifetime has passed (consul-template's
    // renewal), so about 10% is left when it is replaced: more than the alert's threshold, or
    // BrokersideCertificateExpiresSoon would fire before every renewal.
    let ttl = match jobspec_defaults("brokerside").get("tls_ttl") {
        Some(hcl::Value::String(s)) => seconds(s),
        other => panic!("tls_ttl default: {other:?}"),
    };
    let alerts = read(&deploy("monitoring/alerts.yml"));
    let rule = alerts
        .split("- alert: ")
        .find(|r| r.starts_with("BrokersideCertificateExpiresSoon"))
        .unwrap_or_else(|| panic!("alerts.yml: no BrokersideCertificateExpiresSoon"));
    let threshold: u64 = rule
        .split("time() < ")
        .nth(1)
        .and_then(|t| t.lines().next())
        .map(|t| {
            t.split('*')
                .map(|f| {
                    f.trim()
                        .parse::<u64>()
                        .unwrap_or_else(|e| panic!("{t}: {e}"))
                })
                .product()
        })
        .unwrap_or_else(|| panic!("BrokersideCertificateExpiresSoon: no `time() < N` threshold"));
    assert!(
        ttl / 10 > threshold,
        "tls_ttl {ttl}s leaves {}s at renewal, within the alert's {threshold}s",
        ttl / 10
    );
}

#[test]
fn kubernetes_terminates_tls_with_the_secret_mounted_as_a_directory() {
    let sts = read(&deploy("kubernetes/statefulset.yaml"));
    // Mounted as a directory: a renewed Secret reaches the pod (a subPath mount never would).
    assert!(
        sts.contains(&format!(
            "- name: {K8S_TLS_SECRET}\n              mountPath: {K8S_TLS_MOUNT}\n              readOnly: true\n"
        )),
        "statefulset.yaml: the Secret is not mounted at {K8S_TLS_MOUNT}"
    );
    assert!(
        sts.contains(&format!(
            "- name: {K8S_TLS_SECRET}\n          secret:\n            secretName: {K8S_TLS_SECRET}\n"
        )),
        "statefulset.yaml: no volume of the Secret {K8S_TLS_SECRET}"
    );
    assert!(
        !sts.lines().any(|l| l.trim_start().starts_with("subPath")),
        "statefulset.yaml mounts with subPath"
    );
    // The sidecar terminates TLS with the Secret's files and relays plaintext to EMQX, whose
    // own TLS listeners are off.
    let config = parse_config(&configmap_config());
    for listener in ["mqtts", "wss"] {
        assert_eq!(
            tls_field(&config, listener, "cert"),
            Some(format!("{K8S_TLS_MOUNT}/tls.crt").as_str())
        );
        assert_eq!(
            tls_field(&config, listener, "key"),
            Some(format!("{K8S_TLS_MOUNT}/tls.key").as_str())
        );
    }
    for listener in ["mqtt", "ws"] {
        assert_eq!(tls_field(&config, listener, "cert"), None, "{listener}");
    }
    for (backend, bind) in [
        ("broker-mqtts", "EMQX_LISTENERS__TCP__DEFAULT__BIND"),
        ("broker-wss", "EMQX_LISTENERS__WS__DEFAULT__BIND"),
    ] {
        let port = sts
            .split(&format!("- name: {bind}\n"))
            .nth(1)
            .and_then(|rest| rest.lines().next())
            .and_then(|l| l.trim().strip_prefix("value: 0.0.0.0:"))
            .unwrap_or_else(|| panic!("statefulset.yaml: no {bind}"));
        assert_eq!(
            backend_servers(&config, backend),
            [format!("127.0.0.1:{port}")]
        );
    }
    for listener in ["SSL", "WSS"] {
        assert!(
            sts.contains(&format!(
                "- name: EMQX_LISTENERS__{listener}__DEFAULT__ENABLE\n              value: \"false\"\n"
            )),
            "statefulset.yaml: EMQX's {listener} listener is still on"
        );
    }
    // The optional cert-manager Certificate fills that Secret and renews it ahead of the alert.
    let cert = read(&deploy("kubernetes/cert-manager/certificate.yaml"));
    for needle in [
        "apiVersion: cert-manager.io/v1\n",
        "kind: Certificate\n",
        &format!("  secretName: {K8S_TLS_SECRET}\n"),
        "    rotationPolicy: Always\n",
        "  renewBefore: 720h\n",
    ] {
        assert!(cert.contains(needle), "certificate.yaml lacks {needle:?}");
    }
}

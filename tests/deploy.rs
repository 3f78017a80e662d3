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
//!
//! The Kubernetes manifests are also checked by `kubernetes-validate --strict` and yamllint in
//! `.ci/deploy-checks.sh`.

#[path = "deploy/hcl_check.rs"]
mod hcl_check;

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
    let template = sub(task, "template");
    assert_eq!(value(template, "change_mode"), hcl::Value::from("signal"));
    assert_eq!(value(template, "change_signal"), hcl::Value::from("SIGHUP"));
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

/// The `data` of the brokerside job's template as Nomad hands it to consul-template: its HCL
/// interpolations (`${var.consul_kv_prefix}`) evaluated with the jobspec variables' defaults,
/// which are also what the Terraform module passes unless told otherwise. An interpolation of
/// anything else fails here.
fn nomad_brokerside_template() -> String {
    use hcl::eval::{Context, Evaluate};
    let job = job("brokerside");
    let template = sub(sub(sub(&job, "group"), "task"), "template");
    assert_eq!(
        value(template, "destination"),
        hcl::Value::from("local/brokerside.toml")
    );
    let data = attr(template, "data").unwrap_or_else(|| panic!("template.data"));
    assert!(
        template_text(data).is_some(),
        "template.data is not a string"
    );
    let mut ctx = Context::new();
    ctx.declare_var("var", hcl::Value::Object(jobspec_defaults("brokerside")));
    match data.evaluate(&ctx) {
        Ok(hcl::Value::String(s)) => s,
        Ok(other) => panic!("template.data evaluates to {other:?}"),
        Err(e) => panic!("template.data: HCL interpolation: {e}"),
    }
}

/// A value a Nomad template reads from Consul KV: `{{ keyOrDefault "<key>" "<default>" }}`.
#[derive(Debug, Clone, PartialEq)]
struct KvRead {
    key: String,
    default: String,
}

/// A consul-template text rendered for this test, and the KV keys it read.
#[derive(Debug)]
struct Rendered {
    text: String,
    kv: Vec<KvRead>,
}

/// A word of a template action: a bare identifier or a Go double-quoted string.
#[derive(Debug, PartialEq)]
enum Word {
    Ident(String),
    Str(String),
}

fn action_words(action: &str) -> Result<Vec<Word>, String> {
    let mut words = Vec::new();
    let mut chars = action.trim().chars().peekable();
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
        } else if c.is_ascii_alphabetic() {
            let mut s = String::new();
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                s.push(c);
                chars.next();
            }
            words.push(Word::Ident(s));
        } else {
            return Err(format!(
                "{c:?} (pipes, variables, trim markers, ...) is not supported here"
            ));
        }
    }
    Ok(words)
}

/// Renders a consul-template text the way Nomad would, as far as this test knows how:
/// `{{ env "NAME" }}` becomes `env(NAME)` (an unknown name fails) and
/// `{{ keyOrDefault "key" "default" }}` becomes `kv(key)`, or the default when that is `None`
/// (the key is absent from Consul). Any other action fails, naming it, so that a new one has
/// to be taught to this renderer on purpose.
fn render_consul_template(
    data: &str,
    env: &dyn Fn(&str) -> Option<String>,
    kv: &dyn Fn(&str) -> Option<String>,
) -> Result<Rendered, String> {
    let mut text = String::new();
    let mut reads = Vec::new();
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
        let out = match words.as_slice() {
            [Word::Ident(f), Word::Str(name)] if f == "env" => env(name)
                .ok_or_else(|| unknown(format!("env {name:?} is not known to this test")))?,
            [Word::Ident(f), Word::Str(key), Word::Str(default)] if f == "keyOrDefault" => {
                reads.push(KvRead {
                    key: key.clone(),
                    default: default.clone(),
                });
                kv(key).unwrap_or_else(|| default.clone())
            }
            _ => return Err(unknown("unknown action".into())),
        };
        text.push_str(&out);
        rest = &after[close + 2..];
    }
    text.push_str(rest);
    Ok(Rendered { text, kv: reads })
}

/// Renders the brokerside job's template the way Nomad would on a node: `NOMAD_PORT_<label>`
/// is the static port of that label, `NOMAD_IP_<label>` the node's address (a sample one),
/// and each Consul KV key read has the value `kv` gives (`None`: absent, so the default).
fn nomad_brokerside_render(kv: &[(&str, &str)]) -> Rendered {
    let job = job("brokerside");
    let ports = static_ports(sub(&job, "group"));
    let env = |name: &str| {
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
        } else {
            None
        }
    };
    let lookup = |key: &str| {
        kv.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
    };
    let rendered = render_consul_template(&nomad_brokerside_template(), &env, &lookup)
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

#[test]
fn template_renderer_knows_env_and_key_or_default_and_refuses_the_rest() {
    let env = |name: &str| (name == "A").then(|| "1".to_string());
    let kv = |key: &str| (key == "p/set").then(|| "9".to_string());
    let ok = render_consul_template(
        concat!(
            "a = {{ env \"A\" }}\n",
            "b = {{keyOrDefault \"p/unset\" \"2s\"}}\n",
            "c = {{ keyOrDefault \"p/set\" \"3\" }}\n",
        ),
        &env,
        &kv,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.text, "a = 1\nb = 2s\nc = 9\n");
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
    for bad in [
        "{{ key \"p/x\" }}",
        "{{ keyOrDefault \"p/x\" }}",
        "{{ env \"B\" }}",
        "{{ keyOrDefault \"p/x\" \"1\" | toJSON }}",
        "{{- env \"A\" }}",
        "{{ $x := env \"A\" }}",
        "{{ range service \"emqx\" }}",
        "{{ env \"A\"",
    ] {
        let err = render_consul_template(bad, &env, &kv)
            .err()
            .unwrap_or_else(|| panic!("{bad} was rendered"));
        assert!(err.contains("template action"), "{bad}: {err}");
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
    let configs = [
        ("nomad-brokerside.toml", nomad_brokerside_config()),
        ("kubernetes-configmap.toml", configmap_config()),
    ];
    let failures: Vec<String> = configs
        .iter()
        .filter_map(|(name, config)| check_config(name, config).err())
        .collect();
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

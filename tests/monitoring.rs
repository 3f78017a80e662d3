//! The Grafana dashboard in deploy/monitoring as Grafana reads it: valid JSON, a data source
//! variable that every query uses (no data source fixed to one Grafana), an instance variable
//! that every brokerside query filters on, and a row for each concern the operator looks at.
//! Whether the queries parse and find their metrics is checked against a real Prometheus and a
//! running sidecar by tests/monitoring/run.sh.

use serde_json::Value;

fn dashboard() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/monitoring/dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("deploy/monitoring/dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is valid JSON")
}

/// Every panel, those inside collapsed rows included.
fn panels(panels: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in panels.as_array().expect("a panel list") {
        all.push(panel);
        if let Some(inner) = panel.get("panels") {
            all.extend(self::panels(inner));
        }
    }
    all
}

#[test]
fn every_query_uses_the_datasource_and_instance_variables() {
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    assert!(
        variables
            .iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "no datasource variable"
    );
    assert!(
        variables.iter().any(|v| v["name"] == "instance"),
        "no instance variable"
    );
    let mut queries = 0;
    for panel in panels(&dashboard["panels"]) {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"].as_str().expect("an expression");
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{expr}");
            assert!(
                expr.contains("instance=~\"$instance\""),
                "`{}` does not follow the instance variable: {expr}",
                panel["title"]
            );
            queries += 1;
        }
    }
    assert!(queries >= 30, "only {queries} queries");
}

#[test]
fn one_row_per_concern() {
    let dashboard = dashboard();
    let rows: Vec<&str> = panels(&dashboard["panels"])
        .into_iter()
        .filter(|panel| panel["type"] == "row")
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    assert_eq!(
        rows,
        [
            "Connections per listener",
            "Bytes",
            "Backend servers",
            "Peers and discovery",
            "Cluster guard and drain",
            "Config reloads",
            "Process",
            "Admin endpoint",
            "TLS termination",
            "Admission pacing",
        ]
    );
    // Panel ids are unique, as Grafana needs them to be.
    let mut ids: Vec<u64> = panels(&dashboard["panels"])
        .iter()
        .filter_map(|panel| panel["id"].as_u64())
        .collect();
    let count = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate panel ids");
}

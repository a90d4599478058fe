//! `crds/` and the chart's copy must be exactly what the binary generates from the API types.
//! To refresh both after changing the types: `ORK_UPDATE_CRDS=1 cargo test --test crds`.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    check_dir("crds");
}

#[test]
fn the_charts_crds_match_the_types() {
    check_dir("charts/ork/crds");
}

fn check_dir(path: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let files = ork::kubernetes::crd::crd_files().expect("render CRDs");
    if std::env::var_os("ORK_UPDATE_CRDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, yaml) in &files {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
    }
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    committed.sort();
    let mut generated: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    generated.sort();
    assert_eq!(
        committed, generated,
        "crds/ holds exactly the generated files"
    );
    for (name, yaml) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        assert!(
            on_disk == yaml,
            "{path}/{name} is stale; run: ORK_UPDATE_CRDS=1 cargo test --test crds"
        );
    }
}

#[test]
fn crds_have_status_printer_columns_and_list_maps() {
    // RunShards hold records for their Run and have no status of their own.
    let with_status = ork::kubernetes::crd::crds()
        .into_iter()
        .filter(|crd| crd.spec.names.kind != "RunShard");
    for crd in with_status {
        let json = serde_json::to_value(&crd).unwrap();
        let version = &json["spec"]["versions"][0];
        assert_eq!(version["subresources"]["status"], serde_json::json!({}));
        assert!(
            version["additionalPrinterColumns"]
                .as_array()
                .unwrap()
                .len()
                >= 3
        );
        let conditions = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
            ["conditions"];
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"])
        );
        assert_eq!(
            json["spec"]["names"]["categories"],
            serde_json::json!(["ork"])
        );
    }
}

#[test]
fn run_shards_are_namespaced_listed_in_the_ork_category() {
    let crd = ork::kubernetes::crd::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == "RunShard")
        .expect("a RunShard CRD");
    let json = serde_json::to_value(&crd).unwrap();
    assert_eq!(json["spec"]["scope"], "Namespaced");
    assert_eq!(
        json["spec"]["names"]["categories"],
        serde_json::json!(["ork"])
    );
    let spec = spec_schema("RunShard");
    assert_eq!(spec["properties"]["tasks"]["type"], "array");
    assert_eq!(spec["properties"]["definition"]["type"], "array");
}

/// The schema of `kind`'s `spec`.
fn spec_schema(kind: &str) -> serde_json::Value {
    let crd = ork::kubernetes::crd::crds()
        .into_iter()
        .find(|crd| crd.spec.names.kind == kind)
        .expect("CRD of the kind");
    let json = serde_json::to_value(&crd).unwrap();
    json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// Every `(path, schema)` under `schema`, depth first.
fn walk<'a>(
    path: String,
    schema: &'a serde_json::Value,
    out: &mut Vec<(String, &'a serde_json::Value)>,
) {
    out.push((path.clone(), schema));
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            walk(format!("{path}.{name}"), property, out);
        }
    }
    if schema["items"].is_object() {
        walk(format!("{path}[]"), &schema["items"], out);
    }
    if schema["additionalProperties"].is_object() {
        walk(format!("{path}{{}}"), &schema["additionalProperties"], out);
    }
}

#[test]
fn every_integer_in_a_spec_is_bounded_by_the_schema() {
    // The API server ignores `format: uint32`: without bounds it stores numbers the controller
    // cannot read back.
    for kind in ["Workflow", "Run"] {
        let spec = spec_schema(kind);
        let mut nodes = Vec::new();
        walk("spec".into(), &spec, &mut nodes);
        let integers: Vec<&(String, &serde_json::Value)> = nodes
            .iter()
            .filter(|(_, s)| s["type"] == "integer")
            .collect();
        assert!(integers.len() >= 5, "{kind}: {}", integers.len());
        for (path, schema) in integers {
            assert!(
                schema["minimum"].is_number() && schema["maximum"].is_number(),
                "{kind} {path} has no bounds: {schema}"
            );
        }
    }
}

#[test]
fn the_schema_holds_the_validators_bounds() {
    let workflow = spec_schema("Workflow");
    let run = spec_schema("Run");
    let inline = &run["properties"]["workflow"];
    for spec in [&workflow, inline] {
        let p = &spec["properties"];
        let task = &p["tasks"]["items"]["properties"];
        let defaults = &p["defaults"]["properties"];
        let input = &task["inputs"]["items"]["properties"];
        let backoff = &task["retries"]["properties"]["backoff"]["properties"];
        let checks: [(&serde_json::Value, &str, serde_json::Value); 22] = [
            (&p["parallelism"], "maximum", 4294967295.0.into()),
            (&p["parallelism"], "minimum", 1.0.into()),
            (
                &p["activeDeadlineSeconds"],
                "maximum",
                9007199254740991.0.into(),
            ),
            (&p["tasks"], "minItems", 1.into()),
            (
                &p["params"]["items"]["properties"]["name"],
                "pattern",
                "^[A-Za-z_][A-Za-z0-9_]*$".into(),
            ),
            (&task["name"], "maxLength", 63.into()),
            (
                &task["name"],
                "pattern",
                "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$".into(),
            ),
            (&task["dependsOn"]["items"], "maxLength", 63.into()),
            (
                &task["retries"]["properties"]["limit"],
                "maximum",
                4294967295.0.into(),
            ),
            (
                &task["retries"]["properties"]["limit"],
                "minimum",
                0.0.into(),
            ),
            (
                &task["timeoutSeconds"],
                "maximum",
                9007199254740991.0.into(),
            ),
            (
                &defaults["timeoutSeconds"],
                "maximum",
                9007199254740991.0.into(),
            ),
            (&backoff["factor"], "minimum", 1.0.into()),
            (&backoff["initialSeconds"], "minimum", 0.0.into()),
            (&backoff["maxSeconds"], "minimum", 0.0.into()),
            (&input["name"], "pattern", "^[A-Za-z_][A-Za-z0-9_]*$".into()),
            (&input["fromTask"], "maxLength", 63.into()),
            (
                &input["fromParam"],
                "pattern",
                "^[A-Za-z_][A-Za-z0-9_]*$".into(),
            ),
            (
                &task["env"]["items"]["properties"]["name"],
                "pattern",
                ork::compile::names::ENV_NAME_PATTERN.into(),
            ),
            (
                &defaults["env"]["items"]["properties"]["name"],
                "pattern",
                ork::compile::names::ENV_NAME_PATTERN.into(),
            ),
            (&task["serviceAccountName"], "maxLength", 253.into()),
            (&defaults["serviceAccountName"], "maxLength", 253.into()),
        ];
        for (i, (schema, key, want)) in checks.iter().enumerate() {
            assert_eq!(&schema[*key], want, "check {i}: {key} of {schema}");
        }
    }
    let reference = &run["properties"]["workflowRef"]["properties"]["name"];
    assert_eq!(reference["maxLength"], 253);
    assert_eq!(reference["minLength"], 1);
}

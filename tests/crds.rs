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
    for crd in ork::kubernetes::crd::crds() {
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

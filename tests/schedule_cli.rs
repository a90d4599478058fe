//! `ork validate` and `ork schedule next` on Schedule manifests: the answers, the exit codes and
//! the problems named in the user's terms.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jiff::Timestamp;

const ORK: &str = env!("CARGO_BIN_EXE_ork");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn ork(args: &[&str]) -> Output {
    Command::new(ORK).args(args).output().expect("run ork")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn schedule(spec: &str) -> String {
    format!(
        "apiVersion: ork.dev/v1alpha1\nkind: Schedule\nmetadata: {{name: s}}\n\
         spec: {{workflowRef: {{name: w}}, {spec}}}\n"
    )
}

fn lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn schedule_next_prints_ticks_in_the_zone_with_its_offset() {
    let example = repo("examples/schedule.yaml");
    let out = ork(&["schedule", "next", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let ticks = lines(&out);
    assert_eq!(ticks.len(), 5, "five by default: {ticks:?}");
    let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
    let mut previous = Timestamp::now();
    for tick in &ticks {
        // RFC 3339 with the zone's offset: 03:00 local, +01:00 or +02:00.
        assert!(tick.contains("T03:00:00+0"), "{tick}");
        let at: Timestamp = tick.parse().unwrap();
        assert!(at > previous, "{ticks:?}");
        let local = at.to_zoned(berlin.clone());
        assert_eq!((local.hour(), local.minute()), (3, 0));
        assert_eq!(
            tick,
            &local.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
            "the zone's offset"
        );
        previous = at;
    }
    let out = ork(&["schedule", "next", example.to_str().unwrap(), "-n", "2"]);
    assert_eq!(lines(&out).len(), 2);
    let out = ork(&["schedule", "next", example.to_str().unwrap(), "-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn schedule_next_refuses_an_invalid_schedule_or_a_file_without_one() {
    let dir = tempfile::tempdir().unwrap();
    for (spec, words) in [
        (
            "cron: '0 25 * * *'",
            "cron \"0 25 * * *\" is not a valid cron expression",
        ),
        ("cron: '0 0 30 2 *'", "cron \"0 0 30 2 *\" never fires"),
        (
            "cron: '* * * * *', timeZone: Moon/Tycho",
            "timeZone \"Moon/Tycho\" is not a known IANA time zone",
        ),
        ("cron: '* * * * * *'", "Pattern must have 5 fields"),
        (
            "cron: '* * * * *', startingDeadlineSeconds: 0",
            "startingDeadlineSeconds must be at least 1",
        ),
    ] {
        let file = write(dir.path(), "s.yaml", &schedule(spec));
        for command in [
            vec!["schedule", "next", file.to_str().unwrap()],
            vec!["validate", file.to_str().unwrap()],
        ] {
            let out = ork(&command);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command:?} {spec}: {stderr}");
            assert!(stderr.contains("Schedule/s"), "{stderr}");
            assert!(stderr.contains(words), "{spec}: {stderr}");
            assert!(out.stdout.is_empty() || command[0] == "validate");
        }
    }
    let out = ork(&[
        "schedule",
        "next",
        repo("examples/hello.yaml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no Schedule"));
}

#[test]
fn validate_checks_a_schedules_params_against_its_workflow_in_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let workflow = "apiVersion: ork.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\n\
                    spec: {params: [{name: day}], tasks: [{name: t, image: busybox, command: ['true']}]}\n";
    let good = write(
        dir.path(),
        "good.yaml",
        &format!(
            "{workflow}---\n{}",
            schedule("cron: '@daily', params: {day: '$(ORK_SCHEDULED_DATE)'}")
        ),
    );
    let out = ork(&["validate", good.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Schedule/s is valid"));

    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "{workflow}---\n{}",
            schedule("cron: '@daily', params: {dy: x}")
        ),
    );
    let out = ork(&["validate", bad.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("spec.params"), "{stderr}");
    assert!(stderr.contains("dy"), "{stderr}");

    // Without the Workflow in the files, it says its params were not checked.
    let alone = write(dir.path(), "alone.yaml", &schedule("cron: '@hourly'"));
    let out = ork(&["validate", alone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not among the files"));
    // ork run has nothing to run in it, and says why.
    let out = ork(&["run", alone.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a Schedule starts Runs on a cluster"));
}

//! End-to-end tests of Schedules on the test control plane with the kubelet simulator. The
//! controller's schedule clock is sped up (`--test-schedule-clock`, for tests only) so that a
//! `* * * * *` schedule ticks every few seconds; a test may also start that clock at a chosen
//! instant (a daylight-saving change). The decisions themselves are table-tested in
//! `src/schedule/tests.rs`.

mod support;

use std::collections::BTreeSet;

use jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use ork::api::{ConditionStatus, Run, RunPhase, Schedule};
use serde_json::{Value, json};
use support::cluster::eventually;
use support::env::{Env, LONG, chain};

/// The sped-up clock the controller of one test ticks by.
struct Clock {
    origin: Timestamp,
    shown: Timestamp,
    rate: i32,
}

impl Clock {
    fn new(rate: i32, shown: Option<&str>) -> Self {
        let origin = Timestamp::now();
        let shown = shown.map_or(origin, |s| s.parse().unwrap());
        Self {
            origin,
            shown,
            rate,
        }
    }

    fn arg(&self) -> String {
        format!("{},{},{}", self.origin, self.rate, self.shown)
    }

    /// What the controller's schedule clock shows now.
    fn now(&self) -> Timestamp {
        let elapsed = Timestamp::now().duration_since(self.origin);
        self.shown + elapsed * self.rate
    }

    /// Waits until the clock shows `at`: a wait on a condition (the time), with a deadline.
    async fn wait_for(&self, at: Timestamp) {
        eventually(&format!("the schedule clock to show {at}"), LONG, || {
            let reached = self.now() >= at;
            async move { reached.then_some(()) }
        })
        .await;
    }
}

async fn world(prefix: &str, clock: &Clock) -> Env {
    let arg = clock.arg();
    Env::with_args(prefix, &["--test-schedule-clock", &arg]).await
}

fn schedule(name: &str, workflow: &str, spec: Value) -> Value {
    let mut full = json!({"workflowRef": {"name": workflow}, "cron": "* * * * *"});
    if let (Value::Object(full), Value::Object(extra)) = (&mut full, spec) {
        full.extend(extra);
    }
    json!({"apiVersion": "ork.dev/v1alpha1", "kind": "Schedule", "metadata": {"name": name},
        "spec": full})
}

fn apply(env: &Env, manifest: &Value) {
    env.kubectl_ok(&["apply", "-f", "-"], Some(&manifest.to_string()));
}

async fn runs_of(env: &Env, schedule: &str) -> Vec<Run> {
    env.runs()
        .list(&ListParams::default().labels(&format!("ork.dev/schedule={schedule}")))
        .await
        .unwrap()
        .items
}

async fn schedule_status(env: &Env, name: &str) -> Option<ork::api::ScheduleStatus> {
    let api: kube::Api<Schedule> = kube::Api::namespaced(env.client.clone(), &env.ns);
    api.get(name).await.ok()?.status
}

fn tick_of(run: &Run) -> Timestamp {
    run.metadata.annotations.as_ref().unwrap()["ork.dev/scheduled-time"]
        .parse()
        .unwrap()
}

fn phase(run: &Run) -> Option<RunPhase> {
    run.status.as_ref()?.phase
}

/// Waits until `check` holds for the schedule's Runs.
async fn wait_runs<T>(
    env: &Env,
    schedule: &str,
    what: &str,
    check: impl Fn(&[Run]) -> Option<T>,
) -> T {
    let log = env.controller_log();
    eventually(
        &format!("schedule {schedule}: {what} (log: {})", log.display()),
        LONG,
        || {
            let runs = runs_of(env, schedule);
            let check = &check;
            async move { check(&runs.await) }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tick_makes_one_run_with_the_tick_in_its_name_params_and_env_and_history_is_kept() {
    // A minute lasts 3 s.
    let clock = Clock::new(20, None);
    let env = world("sched-ticks", &clock).await;
    let mut workflow = chain(
        "stamp",
        &[(
            "stamp",
            "printf '{\"tick\": \"%s\", \"day\": \"%s\"}' \"$ORK_SCHEDULED_TIME\" \"$DAY\" > $ORK_OUTPUT",
        )],
    );
    workflow["spec"]["params"] = json!([{"name": "day"}, {"name": "at"}]);
    workflow["spec"]["tasks"][0]["inputs"] = json!([{"name": "DAY", "fromParam": "day"}]);
    env.apply_workflow(&workflow).await;
    apply(
        &env,
        &schedule(
            "stamp",
            "stamp",
            json!({"timeZone": "Pacific/Kiritimati",
                   "params": {"day": "$(ORK_SCHEDULED_DATE)", "at": "$(ORK_SCHEDULED_TIME)"},
                   "successfulRunsHistoryLimit": 2}),
        ),
    );
    // Four ticks made, and the history limit held: only the two newest finished ones are kept.
    let seen = std::sync::Mutex::new(BTreeSet::new());
    let runs = wait_runs(&env, "stamp", "four ticks, two runs kept", |runs| {
        let mut seen = seen.lock().unwrap();
        seen.extend(runs.iter().map(|r| r.metadata.name.clone().unwrap()));
        let succeeded = runs
            .iter()
            .filter(|r| phase(r) == Some(RunPhase::Succeeded))
            .count();
        (seen.len() >= 4 && succeeded == 2 && runs.len() <= 3).then(|| runs.to_vec())
    })
    .await;
    for run in runs
        .iter()
        .filter(|r| phase(r) == Some(RunPhase::Succeeded))
    {
        let tick = tick_of(run);
        let name = run.metadata.name.as_deref().unwrap();
        assert_eq!(name, format!("stamp-{}", tick.as_second() / 60));
        let owner = &run.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("Schedule", Some(true))
        );
        let status = run.status.as_ref().unwrap();
        let params = &status.workflow.as_ref().unwrap().params;
        let day = tick
            .to_zoned(jiff::tz::TimeZone::get("Pacific/Kiritimati").unwrap())
            .date()
            .to_string();
        assert_eq!(params["day"], day);
        assert_eq!(params["at"], tick.to_string());
        let outputs = status.tasks[0].outputs.as_ref().unwrap();
        assert_eq!(outputs["tick"], json!(tick.to_string()));
        assert_eq!(outputs["day"], json!(day));
    }
    let status = schedule_status(&env, "stamp").await.unwrap();
    let last = status.last_schedule_time.unwrap();
    assert!(status.next_schedule_time.unwrap() > last);
    assert!(status.last_successful_time.is_some());
    let valid = &status.conditions[0];
    assert_eq!(
        (valid.type_.as_str(), valid.status),
        ("Valid", ConditionStatus::True)
    );
    let events = env.events_about("stamp").await;
    assert!(
        events.iter().any(|(reason, _, _)| reason == "RunCreated"),
        "{events:?}"
    );
    let table = env.kubectl_ok(&["get", "schedules.ork.dev", "stamp"], None);
    for column in [
        "CRON",
        "ZONE",
        "SUSPENDED",
        "LAST",
        "NEXT",
        "* * * * *",
        "Pacific/Kiritimati",
    ] {
        assert!(table.contains(column), "{column} in {table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_policies_allow_forbid_and_replace() {
    // A minute lasts 2 s; each run takes 5 s (Allow, Forbid) or for ever (Replace).
    let clock = Clock::new(30, None);
    let env = world("sched-policy", &clock).await;
    env.apply_workflow(&chain("five", &[("wait", "sleep 5")]))
        .await;
    env.apply_workflow(&chain("forever", &[("wait", "sleep 300")]))
        .await;
    apply(&env, &schedule("allow", "five", json!({})));
    apply(
        &env,
        &schedule("forbid", "five", json!({"concurrencyPolicy": "Forbid"})),
    );
    apply(
        &env,
        &schedule(
            "replace",
            "forever",
            json!({"concurrencyPolicy": "Replace"}),
        ),
    );

    // Allow: runs overlap.
    wait_runs(&env, "allow", "two runs at once", |runs| {
        let active = runs
            .iter()
            .filter(|r| !phase(r).is_some_and(RunPhase::is_final));
        (active.count() >= 2).then_some(())
    })
    .await;

    // Forbid: never two at once; ticks meanwhile are skipped for good, with an Event.
    let most_at_once = std::sync::Mutex::new(0usize);
    wait_runs(&env, "forbid", "two runs finished, ticks skipped", |runs| {
        let active = runs
            .iter()
            .filter(|r| !phase(r).is_some_and(RunPhase::is_final))
            .count();
        let mut most = most_at_once.lock().unwrap();
        *most = (*most).max(active);
        let done = runs
            .iter()
            .filter(|r| phase(r) == Some(RunPhase::Succeeded))
            .count();
        (done >= 2).then_some(())
    })
    .await;
    assert_eq!(*most_at_once.lock().unwrap(), 1);
    let status = schedule_status(&env, "forbid").await.unwrap();
    assert!(status.last_skipped_time.is_some(), "{status:?}");
    let events = env.events_about("forbid").await;
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "TickSkipped" && note.contains("Forbid")),
        "{events:?}"
    );
    // A skipped tick is never run late: a run lasts two and a half minutes of the schedule's
    // clock, so the ticks of two runs in a row are at least two minutes apart.
    let mut runs = runs_of(&env, "forbid").await;
    runs.sort_by_key(tick_of);
    for pair in runs.windows(2) {
        let gap = tick_of(&pair[1]).duration_since(tick_of(&pair[0]));
        assert!(
            gap >= SignedDuration::from_mins(2),
            "{gap:?} between {pair:?}"
        );
    }

    // Replace: the running one is cancelled for the next.
    let cancelled = wait_runs(&env, "replace", "a run cancelled by the next", |runs| {
        runs.iter()
            .find(|r| phase(r) == Some(RunPhase::Cancelled))
            .cloned()
    })
    .await;
    assert!(cancelled.spec.cancel);
    let later = runs_of(&env, "replace").await;
    assert!(
        later.iter().any(|r| tick_of(r) > tick_of(&cancelled)),
        "a newer run replaced it"
    );
    let events = env.events_about("replace").await;
    assert!(
        events.iter().any(|(reason, _, _)| reason == "RunReplaced"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_and_invalid_schedules_make_nothing() {
    let clock = Clock::new(30, None);
    let env = world("sched-suspend", &clock).await;
    env.apply_workflow(&chain("quick", &[("ok", "true")])).await;
    apply(&env, &schedule("held", "quick", json!({"suspend": true})));
    apply(
        &env,
        &schedule("bad-cron", "quick", json!({"cron": "61 * * * *"})),
    );
    apply(
        &env,
        &schedule(
            "bad-zone",
            "quick",
            json!({"timeZone": "Mars/Olympus_Mons"}),
        ),
    );
    let start = clock.now();
    // Three ticks pass (seen by the clock) while suspended.
    clock.wait_for(start + SignedDuration::from_mins(3)).await;
    assert!(runs_of(&env, "held").await.is_empty());
    let held = schedule_status(&env, "held").await.unwrap_or_default();
    assert_eq!(held.next_schedule_time, None);
    for (name, words) in [
        (
            "bad-cron",
            "cron \"61 * * * *\" is not a valid cron expression",
        ),
        (
            "bad-zone",
            "timeZone \"Mars/Olympus_Mons\" is not a known IANA time zone",
        ),
    ] {
        let status = schedule_status(&env, name).await.unwrap();
        let valid = &status.conditions[0];
        assert_eq!(valid.status, ConditionStatus::False, "{name}");
        assert!(
            valid.message.as_deref().unwrap().contains(words),
            "{valid:?}"
        );
        assert!(runs_of(&env, name).await.is_empty());
        let events = env.events_about(name).await;
        assert!(
            events
                .iter()
                .any(|(reason, _, _)| reason == "InvalidSchedule"),
            "{events:?}"
        );
    }
    // Resumed: the latest missed tick runs at once (no starting deadline), then each tick.
    apply(&env, &schedule("held", "quick", json!({"suspend": false})));
    wait_runs(&env, "held", "two runs after resuming", |runs| {
        (runs.len() >= 2).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_down_across_ticks_makes_no_duplicate_and_catches_up_only_the_latest() {
    // A minute lasts 3 s.
    let clock = Clock::new(20, None);
    let mut env = world("sched-restart", &clock).await;
    env.apply_workflow(&chain("quick", &[("ok", "true")])).await;
    apply(&env, &schedule("catchup", "quick", json!({})));
    wait_runs(&env, "catchup", "a first run", |runs| {
        (!runs.is_empty()).then_some(())
    })
    .await;
    // Killed and restarted around ticks a few times: never two Runs for one tick.
    for _ in 0..3 {
        env.kill_controller();
        clock
            .wait_for(clock.now() + SignedDuration::from_secs(50))
            .await;
        env.start_controller();
        clock
            .wait_for(clock.now() + SignedDuration::from_secs(30))
            .await;
    }
    let before = runs_of(&env, "catchup").await;
    let ticks: BTreeSet<Timestamp> = before.iter().map(tick_of).collect();
    assert_eq!(ticks.len(), before.len(), "one run per tick");

    // Down for five ticks: only the latest runs, once.
    env.kill_controller();
    let down_at = clock.now();
    clock.wait_for(down_at + SignedDuration::from_mins(5)).await;
    env.start_controller();
    let up_at = clock.now();
    let caught_up = wait_runs(&env, "catchup", "the catch-up run", |runs| {
        let new: Vec<Timestamp> = runs
            .iter()
            .map(tick_of)
            .filter(|tick| *tick > down_at && *tick <= up_at)
            .collect();
        (!new.is_empty()).then_some(new)
    })
    .await;
    assert_eq!(
        caught_up.len(),
        1,
        "missed ticks are not replayed: {caught_up:?}"
    );
    assert!(
        caught_up[0] >= down_at + SignedDuration::from_mins(4),
        "the latest missed tick"
    );
    // And ticking goes on, one run per tick.
    wait_runs(&env, "catchup", "a tick after the restart", |runs| {
        runs.iter().any(|r| tick_of(r) > up_at).then_some(())
    })
    .await;
    let after = runs_of(&env, "catchup").await;
    let after_ticks: BTreeSet<Timestamp> = after.iter().map(tick_of).collect();
    assert_eq!(after_ticks.len(), after.len(), "one run per tick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_days_run_only_the_latest_and_a_starting_deadline_skips_a_late_one() {
    // The schedules' clock shows 40 s past midnight on 10 January 2027 when they are first
    // seen: for a daily schedule made today, some 40 midnights were missed.
    let clock = Clock::new(1, Some("2027-01-10T00:00:40Z"));
    let env = world("sched-missed", &clock).await;
    env.apply_workflow(&chain("quick", &[("ok", "true")])).await;
    apply(
        &env,
        &schedule("daily", "quick", json!({"cron": "0 0 * * *"})),
    );
    apply(
        &env,
        &schedule(
            "strict",
            "quick",
            json!({"cron": "0 0 * * *", "startingDeadlineSeconds": 30}),
        ),
    );
    let runs = wait_runs(&env, "daily", "the latest missed tick's run", |runs| {
        runs.first().map(|_| runs.to_vec())
    })
    .await;
    let ticks: Vec<String> = runs.iter().map(|r| tick_of(r).to_string()).collect();
    assert_eq!(ticks, ["2027-01-10T00:00:00Z"]);
    let status = eventually("the late tick to be skipped", LONG, || {
        let env = &env;
        async move {
            let status = schedule_status(env, "strict").await?;
            status.last_skipped_time.map(|_| status)
        }
    })
    .await;
    assert_eq!(
        status.last_skipped_time.unwrap().to_string(),
        "2027-01-10T00:00:00Z"
    );
    assert_eq!(status.last_schedule_time, None);
    assert_eq!(
        status.next_schedule_time.unwrap().to_string(),
        "2027-01-11T00:00:00Z"
    );
    assert!(runs_of(&env, "strict").await.is_empty());
    let events = env.events_about("strict").await;
    assert!(
        events
            .iter()
            .any(|(reason, note, _)| reason == "TickSkipped"
                && note.contains("startingDeadlineSeconds")),
        "{events:?}"
    );
    // Exactly one run for the daily schedule, still.
    assert_eq!(runs_of(&env, "daily").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daylight_saving_changes_fire_each_tick_once() {
    // The clock starts just before Berlin springs forward (2027-03-28, 02:00 CET -> 03:00
    // CEST at 01:00 UTC); a minute lasts 0.1 s. (The deadline keeps the day before, missed
    // since the schedule was made, from running.)
    let clock = Clock::new(600, Some("2027-03-28T00:40:00Z"));
    let env = world("sched-dst", &clock).await;
    env.apply_workflow(&chain("quick", &[("ok", "true")])).await;
    // 02:30 does not exist that night: it fires once, when the clock jumps. 02:00-02:59 every
    // 20 minutes: three wall times, one instant.
    apply(
        &env,
        &schedule(
            "gap",
            "quick",
            json!({"cron": "30 2 * * *", "timeZone": "Europe/Berlin",
                   "startingDeadlineSeconds": 600}),
        ),
    );
    apply(
        &env,
        &schedule(
            "gap-many",
            "quick",
            json!({"cron": "*/20 2 * * *", "timeZone": "Europe/Berlin",
                   "startingDeadlineSeconds": 600}),
        ),
    );
    clock
        .wait_for("2027-03-28T02:00:00Z".parse().unwrap())
        .await;
    for name in ["gap", "gap-many"] {
        let runs = wait_runs(&env, name, "the run at the jump", |runs| {
            (!runs.is_empty()).then(|| runs.to_vec())
        })
        .await;
        let ticks: Vec<String> = runs.iter().map(|r| tick_of(r).to_string()).collect();
        assert_eq!(ticks, ["2027-03-28T01:00:00Z"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_hour_fires_once() {
    // Berlin falls back on 2027-10-31: 03:00 CEST -> 02:00 CET at 01:00 UTC, so 02:30 happens
    // at 00:30 and again at 01:30 UTC. A minute lasts 0.1 s.
    let clock = Clock::new(600, Some("2027-10-31T00:10:00Z"));
    let env = world("sched-fold", &clock).await;
    env.apply_workflow(&chain("quick", &[("ok", "true")])).await;
    apply(
        &env,
        &schedule(
            "fold",
            "quick",
            json!({"cron": "30 2 * * *", "timeZone": "Europe/Berlin",
                   "startingDeadlineSeconds": 600}),
        ),
    );
    clock
        .wait_for("2027-10-31T02:00:00Z".parse().unwrap())
        .await;
    let runs = wait_runs(&env, "fold", "the run at the first 02:30", |runs| {
        (!runs.is_empty()).then(|| runs.to_vec())
    })
    .await;
    let ticks: Vec<String> = runs.iter().map(|r| tick_of(r).to_string()).collect();
    assert_eq!(ticks, ["2027-10-31T00:30:00Z"]);
    let status = schedule_status(&env, "fold").await.unwrap();
    assert_eq!(
        status.next_schedule_time.unwrap().to_string(),
        "2027-11-01T01:30:00Z"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_schedule_runs_its_workflow_at_three_in_berlin() {
    // 02:58 in Berlin on 10 January 2027, ten times faster: the schedule is seen (and the
    // night before found missed) some 12 s before its tick.
    let clock = Clock::new(10, Some("2027-01-10T01:58:00Z"));
    let env = world("sched-example", &clock).await;
    let file = support::env::repo("examples/schedule.yaml");
    env.kubectl_ok(&["apply", "-f", file.to_str().unwrap()], None);
    let runs = wait_runs(&env, "nightly-report", "the 03:00 run, succeeded", |runs| {
        runs.iter()
            .any(|r| phase(r) == Some(RunPhase::Succeeded))
            .then(|| runs.to_vec())
    })
    .await;
    // The night before was missed by far more than the hour's starting deadline: skipped.
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(tick_of(run).to_string(), "2027-01-10T02:00:00Z");
    let status = run.status.as_ref().unwrap();
    assert_eq!(
        status.workflow.as_ref().unwrap().params["date"],
        "2027-01-10"
    );
    let outputs = status.tasks[0].outputs.as_ref().unwrap();
    assert_eq!(
        serde_json::Value::Object(outputs.clone()),
        json!({"day": "2027-01-10", "tick": "2027-01-10T02:00:00Z"})
    );
    let schedule = schedule_status(&env, "nightly-report").await.unwrap();
    assert_eq!(
        schedule.next_schedule_time.unwrap().to_string(),
        "2027-01-11T02:00:00Z"
    );
    assert_eq!(
        schedule.last_skipped_time.unwrap().to_string(),
        "2027-01-09T02:00:00Z"
    );
}

//! `kill -9` of the server mid-job: a new server on the same data
//! directory brings the job back from its latest checkpoint, with exactly
//! once output, and the operations still answer.

use serde_json::{Value, json};
use sluice_tests::TempDir;

use super::{Feeder, Served, counts, tenant_with, wordcount};

#[test]
fn a_server_killed_mid_job_brings_it_back_exactly_once_and_its_operations_still_answer() {
    let dir = TempDir::new("serve-kill");
    let feeder = Feeder::start();
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let settings = json!({
        "source": format!("socket://{}", feeder.addr()),
        "sink": "file://out.txt",
        "parallelism": 2,
        "checkpoint-interval": "200ms",
    });
    let job = api.submit("a", &dev, &module, settings);
    let mut sent: Vec<String> = Vec::new();
    let lines: Vec<String> = (0..200)
        .map(|i| format!("w{} w{} common", i % 17, i % 5))
        .collect();
    let first: Vec<&str> = lines[..100].iter().map(String::as_str).collect();
    feeder.send(1, &first);
    sent.extend(first.iter().map(|s| s.to_string()));
    let want = counts(&first);
    api.wait_lines("a", &dev, "out.txt", want.lines().count());
    let op = api
        .post(
            &format!("/v1/tenants/a/jobs/{job}/savepoint"),
            &dev,
            json!({}),
        )
        .expect(202);
    let op = api.wait_op("a", &dev, &op);
    assert_eq!(op["status"], "succeeded");
    // More lines, then the crash before the next checkpoint may be taken.
    let middle: Vec<&str> = lines[100..150].iter().map(String::as_str).collect();
    feeder.send(1, &middle);
    sent.extend(middle.iter().map(|s| s.to_string()));
    std::thread::sleep(std::time::Duration::from_millis(50));
    server.kill9();

    let server = Served::start(&dir, &[]);
    let api = server.api();
    assert!(
        server.log().contains("restoring checkpoint")
            || server.log().contains("restoring from the job's start"),
        "{}",
        server.log()
    );
    let last: Vec<&str> = lines[150..].iter().map(String::as_str).collect();
    feeder.send(2, &last);
    sent.extend(last.iter().map(|s| s.to_string()));
    let all: Vec<&str> = sent.iter().map(String::as_str).collect();
    let want = counts(&all);
    let got = api.wait_lines("a", &dev, "out.txt", want.lines().count());
    assert_eq!(got, want, "every update exactly once, in order");
    let job_now = api
        .get(&format!("/v1/tenants/a/jobs/{job}"), &dev)
        .expect(200);
    assert_eq!(job_now["state"], "RUNNING");
    assert_eq!(job_now["starts"], 2);
    let id = op["id"].as_str().unwrap_or_default();
    let again = api
        .get(&format!("/v1/tenants/a/operations/{id}"), &dev)
        .expect(200);
    assert_eq!(
        (again["status"].clone(), again["savepoint"].clone()),
        (json!("succeeded"), op["savepoint"].clone())
    );
}

#[test]
fn sigterm_stops_the_server_despite_a_followed_stream_and_the_job_resumes() {
    let dir = TempDir::new("serve-term");
    let feeder = Feeder::start();
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let settings = json!({"source": format!("socket://{}", feeder.addr()), "sink": "file://out.txt", "checkpoint-interval": "100ms"});
    let job = api.submit("a", &dev, &module, settings);
    feeder.send(1, &["a b"]);
    api.wait_lines("a", &dev, "out.txt", 2);
    // An event stream a client follows keeps its connection open.
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    let stream = agent
        .get(format!(
            "{}/v1/tenants/a/jobs/{job}/events?follow=true",
            server.url
        ))
        .header("Authorization", format!("Bearer {dev}"))
        .call()
        .expect("follow the events");
    let (took, code) = server.terminate();
    drop(stream);
    assert_eq!(code, Some(0));
    assert!(
        took < std::time::Duration::from_secs(10),
        "stopping took {took:?}"
    );
    let server = Served::start(&dir, &[]);
    let api = server.api();
    feeder.send(2, &["a"]);
    assert_eq!(
        api.wait_lines("a", &dev, "out.txt", 3),
        counts(&["a b", "a"])
    );
    assert_eq!(
        api.get(&format!("/v1/tenants/a/jobs/{job}"), &dev)
            .expect(200)["starts"],
        2
    );
}

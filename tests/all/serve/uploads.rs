//! Modules as uploads: content-addressed, checked against the WIT world
//! before anything else, compiled in a child process under limits; what is
//! not a guest, too big, or too costly to compile is refused with the
//! right status, and a module in use cannot be deleted.

use serde_json::{Value, json};
use sluice_tests::TempDir;

use super::{Api, Send, Served, guest, tenant_with, wordcount};

fn upload(api: &Api, token: &str, bytes: Vec<u8>) -> super::Reply {
    api.call(
        "POST",
        "/v1/tenants/a/modules",
        Some(token),
        Send::Bytes(bytes),
    )
}

#[test]
fn modules_are_content_addressed_and_what_is_not_a_guest_is_refused() {
    let dir = TempDir::new("serve-uploads");
    let server = Served::start(&dir, &["--max-module-size", "4MiB"]);
    let api = server.api();
    let dev = tenant_with(&api, "a", None, json!({"module-size": 1_000_000}));
    let first = upload(&api, &dev, wordcount()).expect(201);
    assert_eq!(first["wit"], "sluice:stream@0.1.0");
    assert_eq!(first["size"], wordcount().len());
    let digest = first["digest"].as_str().unwrap_or_default().to_string();
    assert_eq!(digest.len(), 64);
    // The same bytes again: the same module, not compiled twice.
    assert_eq!(
        upload(&api, &dev, wordcount()).expect(200)["digest"],
        digest.as_str()
    );
    assert_eq!(
        api.get("/v1/tenants/a/modules", &dev)
            .expect(200)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let shown = api
        .get(&format!("/v1/tenants/a/modules/{digest}"), &dev)
        .expect(200);
    assert_eq!(shown["description"]["name"], "wordcount");
    assert_eq!(shown["description"]["aggregation"], "sum:1");

    upload(&api, &dev, b"hello".to_vec()).problem(422, "not a WebAssembly file");
    upload(&api, &dev, b"\0asm\x01\0\0\0".to_vec()).problem(422, "core WebAssembly module");
    let mut truncated = wordcount();
    truncated.truncate(truncated.len() / 2);
    upload(&api, &dev, truncated).problem(422, "not a valid WebAssembly component");
    upload(&api, &dev, guest(sluice_tests::guests::OTHER_WORLD)).problem(422, "does not export");
    upload(&api, &dev, guest(sluice_tests::guests::OLD_VERSION)).problem(422, "built against");
    // Over the tenant's module-size quota, and over the server's limit.
    upload(&api, &dev, vec![0u8; 1_000_001]).problem(413, "module-size quota");
    // Over the server's own limit the body is refused from its length:
    // a 413, or the connection closed before the client sent it all.
    let path = "/v1/tenants/a/modules";
    match api.try_call("POST", path, Some(&dev), Send::Bytes(vec![0u8; 5 << 20])) {
        Ok(r) => {
            assert_eq!(r.status, 413, "{:#}", r.body);
            assert_eq!(r.content_type, "application/problem+json");
        }
        Err(e) => assert!(
            e.contains("Broken pipe") || e.contains("reset") || e.contains("closed"),
            "{e}"
        ),
    }

    // A module a job uses cannot be deleted; one no job uses can.
    api.put_file("a", &dev, "in.txt", b"x\n").expect(201);
    let job = api.submit(
        "a",
        &dev,
        &digest,
        json!({"source": "file://in.txt", "sink": "discard"}),
    );
    api.call(
        "DELETE",
        &format!("/v1/tenants/a/modules/{digest}"),
        Some(&dev),
        Send::None,
    )
    .problem(409, &job);
    api.wait_job("a", &dev, &job, "FINISHED", |v| v["state"] == "FINISHED");
    api.call(
        "DELETE",
        &format!("/v1/tenants/a/jobs/{job}"),
        Some(&dev),
        Send::None,
    )
    .expect(204);
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/v1/tenants/a/modules/{digest}"),
            Some(&dev),
            Send::None
        )
        .status,
        204
    );
    api.get(&format!("/v1/tenants/a/modules/{digest}"), &dev)
        .problem(404, "no module");
}

#[test]
fn a_module_whose_compile_runs_past_its_limits_is_refused() {
    let dir = TempDir::new("serve-compile-limits");
    {
        let server = Served::start(&dir, &["--compile-memory", "16MiB"]);
        let api = server.api();
        let dev = tenant_with(&api, "a", None, Value::Null);
        upload(&api, &dev, wordcount()).problem(422, "ran past its limits");
        assert_eq!(
            api.get("/v1/tenants/a/modules", &dev).expect(200),
            json!([])
        );
        server.kill9();
    }
    let server = Served::start(&dir, &["--compile-timeout", "1ms"]);
    let api = server.api();
    let dev = api.token("a", "developer");
    upload(&api, &dev, wordcount()).problem(422, "time limit of 1 ms");
    drop(server);
    // With room to compile, the same module goes in.
    let server = Served::start(&dir, &[]);
    let api = server.api();
    assert_eq!(upload(&api, &dev, wordcount()).status, 201);
}

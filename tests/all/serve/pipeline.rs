//! 0.2.0 pipelines through `host serve`: a `pipeline-job` guest uploads
//! beside the 0.1.0 ones, runs as a tenant's job over its own files, and
//! gives the exact output `host run` gives — the fraud detector (keyed
//! state, timers, a side output, a poison record isolated as an exception)
//! and the windowed wordcount in C (windows firing at the end of input),
//! on the inputs of `tests/all/pipeline.rs`.

use serde_json::json;
use sluice_tests::{TempDir, guests};

use super::{Served, guest, tenant_with};
use crate::pipeline::{FRAUD_ALERTS, FRAUD_INPUT, FRAUD_MALFORMED, WORDS};

#[test]
fn a_0_2_0_fraud_job_gives_exact_alerts_side_output_and_its_poison_exception() {
    let dir = TempDir::new("serve-pipeline");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let dev = tenant_with(&api, "a", None, json!({}));
    let module = api.push("a", &dev, guest(guests::fraud("rust")));
    let record = api
        .get(&format!("/v1/tenants/a/modules/{module}"), &dev)
        .expect(200);
    assert_eq!(record["wit"], "sluice:stream@0.2.0", "{record:#}");
    api.put_file("a", &dev, "tx.txt", FRAUD_INPUT.as_bytes())
        .expect(201);
    let settings = json!({
        "source": "file://tx.txt",
        "sink": "file://alerts.txt",
        "side-outputs": {"malformed": "file://malformed.txt"},
        "parallelism": 2,
        "restart": "fixed-delay:3:0s",
    });
    let job = api.submit("a", &dev, &module, settings);
    api.wait_job("a", &dev, &job, "FINISHED", |v| v["state"] == "FINISHED");
    assert_eq!(api.file("a", &dev, "alerts.txt"), FRAUD_ALERTS);
    assert_eq!(api.file("a", &dev, "malformed.txt"), FRAUD_MALFORMED);
    let exceptions = api
        .get(&format!("/v1/tenants/a/jobs/{job}/exceptions"), &dev)
        .expect(200);
    let list = exceptions.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "only the poison record: {exceptions:#}");
    assert_eq!(list[0]["input"], "POISON,1,320000", "{exceptions:#}");
}

#[test]
fn a_0_2_0_windowed_wordcount_in_c_fires_every_window_exactly() {
    let dir = TempDir::new("serve-windows");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let dev = tenant_with(&api, "a", None, json!({}));
    let module = api.push("a", &dev, guest(guests::windowed_wordcount("c")));
    api.put_file("a", &dev, "words.txt", WORDS.as_bytes())
        .expect(201);
    let settings = json!({
        "source": "file://words.txt",
        "sink": "file://windows.txt",
        "params": {"windows": "sliding", "size": "10000", "slide": "5000"},
    });
    let job = api.submit("a", &dev, &module, settings);
    api.wait_job("a", &dev, &job, "FINISHED", |v| v["state"] == "FINISHED");
    assert_eq!(
        api.file("a", &dev, "windows.txt"),
        "(a,-5000,5000,2)\n(b,-5000,5000,2)\n(c,-5000,5000,1)\n\
         (a,0,10000,3)\n(b,0,10000,2)\n(c,0,10000,1)\n\
         (a,5000,15000,2)\n(d,5000,15000,1)\n\
         (a,10000,20000,1)\n(b,10000,20000,1)\n(d,10000,20000,1)\n\
         (b,15000,25000,1)\n(z,15000,25000,1)\n(z,20000,30000,1)\n"
    );
}

//! The dashboard in headless Chromium, driven over WebDriver
//! (`chromedriver`, Debian's `chromium-driver`, installed by
//! `scripts/prereqs`): sign in with a tenant's token, watch a running
//! job's count go up on its page, stop it with a savepoint.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::TempDir;

use super::{Feeder, Served, tenant_with, wordcount};

/// A headless Chromium under chromedriver; both end when dropped.
struct Browser {
    driver: Child,
    agent: ureq::Agent,
    session: String,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Starts chromedriver and a session; `None` when chromedriver is not
    /// installed.
    fn start() -> Option<Browser> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let mut b = Browser {
            driver,
            agent,
            session: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while b.get("/status")["ready"] != true {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let options = json!({"binary": chromium(), "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]});
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
        let made = b.post("/session", caps);
        let id = made["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {made:#}"))
            .to_string();
        b.session = format!("{}/session/{id}", b.session);
        Some(b)
    }

    fn get(&self, path: &str) -> Value {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.session)
        };
        // Null while chromedriver is not listening yet.
        let Ok(mut r) = self.agent.get(&url).call() else {
            return Value::Null;
        };
        let text = r.body_mut().read_to_string().unwrap_or_default();
        serde_json::from_str::<Value>(&text).unwrap_or(Value::Null)["value"].clone()
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let mut r = self
            .agent
            .post(format!("{}{path}", self.session))
            .send_json(body)
            .expect("WebDriver");
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    /// The element `css` selects, waiting for it (up to 30 s).
    fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.post("/element", json!({"using": "css selector", "value": css}));
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_string();
            }
            assert!(Instant::now() < deadline, "no element {css} on the page");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn click(&self, css: &str) {
        let id = self.find(css);
        self.post(&format!("/element/{id}/click"), json!({}));
    }

    fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.post(&format!("/element/{id}/value"), json!({ "text": text }));
    }

    fn text(&self, css: &str) -> String {
        let id = self.find(css);
        self.get(&format!("/element/{id}/text"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Waits (up to 30 s) until the text of `css` satisfies `done`.
    fn wait_text(&self, css: &str, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text(css);
            if done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {css} says {text:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.contains("/session/") {
            let _ = self.agent.delete(&self.session).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn chromium() -> &'static str {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
}

#[test]
fn the_dashboard_signs_in_shows_a_running_job_counting_and_stops_it_with_a_savepoint() {
    let Some(browser) = Browser::start() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing: run scripts/prereqs"
        );
        eprintln!(
            "chromedriver is not installed (scripts/prereqs installs it): the dashboard is not tried"
        );
        return;
    };
    let dir = TempDir::new("serve-dashboard");
    let server = Served::start(&dir, &[]);
    let api = server.api();
    let feeder = Feeder::start();
    let dev = tenant_with(&api, "a", Some(&feeder), Value::Null);
    let module = api.push("a", &dev, wordcount());
    let settings = json!({"source": format!("socket://{}", feeder.addr()), "sink": "print", "checkpoint-interval": "200ms"});
    let job = api.submit("a", &dev, &module, settings);
    feeder.send(1, &["a b c"]);

    browser.goto(&format!("{}/ui/", server.url));
    browser.type_into("#token", &dev);
    browser.click("#signin-button");
    browser.wait_text("#who", "the tenant's name", |t| t.contains("tenant a"));
    browser.click(&format!("tr[data-job='{job}']"));
    let first = browser.wait_text("#records-in", "the first record", |t| t == "1");
    feeder.send(1, &["d e", "f"]);
    let later = browser.wait_text("#records-in", "the count to go up", |t| t == "3");
    assert_ne!(first, later);
    browser.wait_text("#job-state", "RUNNING", |t| t == "RUNNING");
    browser.click("#stop-button");
    let done = browser.wait_text("#op-status", "the stop to finish", |t| {
        t.contains("stop done")
    });
    assert!(done.contains("savepoint"), "{done}");
    browser.wait_text("#job-state", "STOPPED", |t| t == "STOPPED");
    let job_now = api
        .get(&format!("/v1/tenants/a/jobs/{job}"), &dev)
        .expect(200);
    assert_eq!(job_now["state"], "STOPPED");
    assert_eq!(
        api.get(&format!("/v1/tenants/a/jobs/{job}/savepoints"), &dev)
            .expect(200)
            .as_array()
            .map(Vec::len),
        Some(1)
    );
}

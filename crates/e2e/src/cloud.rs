//! A cloud API of the shape the fleet's HTTP discovery reads (seed 004):
//! `GET /servers` lists instance ids, `GET /{id}` reports one
//! (`{"cpu":"61%","service":"UserService","memory":"4%"}`), with instances
//! the test makes healthy, unhealthy, malformed, failing or slow; and
//! `POST /services/{service}/scale`, recorded, for the `cloud` pack's
//! scale-out. On 127.0.0.1, on a port of its own, in a thread of its own.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// How one instance of the fake API answers.
#[derive(Clone, Debug)]
pub enum Answer {
    Report {
        service: &'static str,
        cpu: u32,
        memory: u32,
    },
    Malformed,
    Fails,
    /// Answers only after this long.
    Slow,
}

/// What the fake API serves and what it was asked.
#[derive(Clone)]
struct Api {
    inventory: Inventory,
    scaled: Arc<Mutex<Vec<(String, String)>>>,
}

type Inventory = Arc<Mutex<BTreeMap<String, Answer>>>;

/// The seed-004 cloud API on a port of its own, in a thread of its own.
pub struct FakeCloud {
    pub url: String,
    inventory: Inventory,
    scaled: Arc<Mutex<Vec<(String, String)>>>,
}

impl FakeCloud {
    pub fn start(instances: &[(&str, Answer)]) -> FakeCloud {
        let inventory: Inventory = Arc::new(Mutex::new(
            instances
                .iter()
                .map(|(id, answer)| (id.to_string(), answer.clone()))
                .collect(),
        ));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API");
        listener.set_nonblocking(true).expect("nonblocking");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let scaled: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let state = Api {
            inventory: inventory.clone(),
            scaled: scaled.clone(),
        };
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let app = axum::Router::new()
                    .route("/servers", axum::routing::get(servers))
                    .route("/{id}", axum::routing::get(instance))
                    .route("/services/{service}/scale", axum::routing::post(scale))
                    .with_state(state);
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .await
                    .expect("serve the fake API");
            });
        });
        FakeCloud {
            url,
            inventory,
            scaled,
        }
    }

    /// `ultronctl source add NAME --http URL --interval 1s` on `hive`,
    /// asserting it was accepted.
    pub fn add_source(&self, hive: &crate::Hive, name: &str) {
        let added = hive.ctl(&[
            "source",
            "add",
            name,
            "--http",
            &self.url,
            "--interval",
            "1s",
        ]);
        assert!(added.status.success(), "{}", crate::stderr(&added));
    }

    /// The scale-out requests received: (service, body), in order.
    pub fn scale_requests(&self) -> Vec<(String, String)> {
        self.scaled.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn set(&self, id: &str, answer: Answer) {
        self.inventory
            .lock()
            .expect("the fake inventory")
            .insert(id.to_string(), answer);
    }
}

async fn servers(State(api): State<Api>) -> Response {
    let inventory = api.inventory;
    let ids: Vec<String> = inventory
        .lock()
        .expect("the fake inventory")
        .keys()
        .cloned()
        .collect();
    axum::Json(ids).into_response()
}

async fn instance(State(api): State<Api>, Path(id): Path<String>) -> Response {
    let inventory = api.inventory;
    let answer = inventory
        .lock()
        .expect("the fake inventory")
        .get(&id)
        .cloned();
    match answer {
        None => StatusCode::NOT_FOUND.into_response(),
        Some(Answer::Report {
            service,
            cpu,
            memory,
        }) => axum::Json(json!({
            "cpu": format!("{cpu}%"),
            "service": service,
            "memory": format!("{memory}%"),
        }))
        .into_response(),
        Some(Answer::Malformed) => {
            (StatusCode::OK, r#"{"cpu":"lots","service":"UserService"}"#).into_response()
        }
        Some(Answer::Fails) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        Some(Answer::Slow) => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            axum::Json(json!({"cpu": "1%", "service": "UserService", "memory": "1%"}))
                .into_response()
        }
    }
}

pub fn report(service: &'static str, cpu: u32, memory: u32) -> Answer {
    Answer::Report {
        service,
        cpu,
        memory,
    }
}

/// `POST /services/{service}/scale`: recorded, answered 202.
async fn scale(State(api): State<Api>, Path(service): Path<String>, body: String) -> Response {
    if let Ok(mut scaled) = api.scaled.lock() {
        scaled.push((service, body));
    }
    (StatusCode::ACCEPTED, r#"{"accepted":true}"#).into_response()
}

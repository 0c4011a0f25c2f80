//! Every gRPC call counted by method and code, and timed: a tower layer around
//! the whole tonic server, so no service can be left out.
//!
//! The method comes from the request path (`/package.Service/Method`); paths not
//! in the served contract count as `other`, so a scanner cannot grow the label
//! set. The code is the response head's `grpc-status` when there is one (tonic
//! answers every refusal trailers-only, in the head) and OK otherwise: a unary
//! call's OK is in its trailers, and a stream counts when it opens, with the
//! status it opened with. The time is to the response head: the whole call for
//! a unary one, the opening for a stream. A call dropped before its head (the
//! client went away, or its deadline passed) counts as CANCELLED with the time
//! until then, so the slowest calls are not the ones left out.
//!
//! Each method's handles are made at start (the counter of a code the first time
//! it is seen), so a call costs a hash of its path, two atomic adds and one
//! histogram observation.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use prost::Message;
use tonic::Code;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CallLabels {
    service: String,
    method: String,
    code: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabels {
    service: String,
    method: String,
}

/// The names of the gRPC codes, by number, as the protocol spells them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

#[derive(Clone)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        // 0.5 ms to about 12 s.
        Histogram::new(exponential_buckets(0.0005, 2.5, 12))
    }
}

/// One method's handles.
struct Method {
    labels: MethodLabels,
    codes: [OnceLock<Counter>; 17],
    latency: Histogram,
    /// Where a code's counter is made the first time it is seen.
    calls: Family<CallLabels, Counter>,
}

impl Method {
    fn count(&self, code: Code, started: Instant) {
        let index = (code as usize).min(CODES.len() - 1);
        self.codes[index]
            .get_or_init(|| {
                self.calls.get_or_create_owned(&CallLabels {
                    service: self.labels.service.clone(),
                    method: self.labels.method.clone(),
                    code: CODES[index],
                })
            })
            .inc();
        self.latency.observe(started.elapsed().as_secs_f64());
    }
}

/// The calls' metrics, shared by every clone of the layer's service.
#[derive(Clone)]
pub struct Rpcs {
    methods: Arc<HashMap<String, Arc<Method>>>,
    other: Arc<Method>,
}

impl Rpcs {
    /// Registers the call metrics, with a handle for every method of the served
    /// contract (logi.v1, health, both reflection versions).
    pub fn new(registry: &mut Registry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "logi_grpc_calls",
            "gRPC calls by service, method and code (a stream counts when it opens)",
            calls.clone(),
        );
        let latency = Family::<MethodLabels, Histogram, Buckets>::new_with_constructor(Buckets);
        registry.register(
            "logi_grpc_call_seconds",
            "Time to a gRPC call's response head: the whole call if unary, the opening if a stream",
            latency.clone(),
        );
        let method = |service: &str, name: &str| {
            let labels = MethodLabels {
                service: service.to_owned(),
                method: name.to_owned(),
            };
            Arc::new(Method {
                latency: latency.get_or_create_owned(&labels),
                labels,
                codes: Default::default(),
                calls: calls.clone(),
            })
        };
        let mut methods = HashMap::new();
        for set in [
            logi::pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
                continue;
            };
            for file in &set.file {
                for service in &file.service {
                    let name = format!("{}.{}", file.package(), service.name());
                    for m in &service.method {
                        let path = format!("/{name}/{}", m.name());
                        methods.insert(path, method(&name, m.name()));
                    }
                }
            }
        }
        Self {
            methods: Arc::new(methods),
            other: method("other", "other"),
        }
    }

    fn method(&self, path: &str) -> &Arc<Method> {
        self.methods.get(path).unwrap_or(&self.other)
    }
}

/// The code a response head says: its `grpc-status`, or OK when it has none
/// (the status is then in the trailers, after a successful start).
pub fn code_of(headers: &HeaderMap) -> Code {
    match headers.get("grpc-status") {
        None => Code::Ok,
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(Code::Unknown, Code::from_i32),
    }
}

/// The layer that puts [`RpcService`] around the server.
#[derive(Clone)]
pub struct RpcLayer(pub Rpcs);

impl<S> tower::Layer<S> for RpcLayer {
    type Service = RpcService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcService {
            inner,
            rpcs: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcService<S> {
    inner: S,
    rpcs: Rpcs,
}

impl<S, B, RB> tower::Service<Request<B>> for RpcService<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let method = self.rpcs.method(req.uri().path()).clone();
        Counted {
            inner: self.inner.call(req),
            method,
            started: Instant::now(),
            counted: false,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's response, counted when its head is ready, or as CANCELLED
    /// when it is dropped before.
    pub struct Counted<F> {
        #[pin]
        inner: F,
        method: Arc<Method>,
        started: Instant,
        counted: bool,
    }

    impl<F> PinnedDrop for Counted<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if !*this.counted {
                this.method.count(Code::Cancelled, *this.started);
            }
        }
    }
}

impl<F, RB, E> Future for Counted<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        let code = match &result {
            Ok(response) => code_of(response.headers()),
            Err(_) => Code::Unknown,
        };
        this.method.count(code, *this.started);
        *this.counted = true;
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::task::Waker;

    use tower::{Layer, Service, ServiceExt};

    use super::*;

    #[test]
    fn the_code_is_the_heads_grpc_status_or_ok() {
        let mut headers = HeaderMap::new();
        assert_eq!(code_of(&headers), Code::Ok);
        headers.insert("grpc-status", "5".parse().unwrap());
        assert_eq!(code_of(&headers), Code::NotFound);
        headers.insert("grpc-status", "16".parse().unwrap());
        assert_eq!(code_of(&headers), Code::Unauthenticated);
        headers.insert("grpc-status", "nonsense".parse().unwrap());
        assert_eq!(code_of(&headers), Code::Unknown);
        headers.insert("grpc-status", "99".parse().unwrap());
        assert_eq!(code_of(&headers), Code::Unknown);
    }

    #[tokio::test]
    async fn calls_count_by_method_and_code_and_unknown_paths_as_other() {
        let mut registry = Registry::default();
        let rpcs = Rpcs::new(&mut registry);
        // Answers as tonic does: a refusal trailers-only, in the head.
        let server = tower::service_fn(|req: Request<()>| async move {
            let mut response = Response::new(());
            if req.uri().path().ends_with("GetBooking") {
                response
                    .headers_mut()
                    .insert("grpc-status", "5".parse().unwrap());
            }
            Ok::<_, Infallible>(response)
        });
        let mut service = RpcLayer(rpcs).layer(server);
        for path in [
            "/logi.v1.BookingService/CreateBooking",
            "/logi.v1.BookingService/GetBooking",
            "/logi.v1.BookingService/CreateBooking",
            "/grpc.health.v1.Health/Check",
            "/no.Such/Thing",
        ] {
            let req = Request::builder().uri(path).body(()).unwrap();
            service.ready().await.unwrap().call(req).await.unwrap();
        }
        let text = logi::metrics::encode(&registry);
        for line in [
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="CreateBooking",code="OK"} 2"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="GetBooking",code="NOT_FOUND"} 1"#,
            r#"logi_grpc_calls_total{service="grpc.health.v1.Health",method="Check",code="OK"} 1"#,
            r#"logi_grpc_calls_total{service="other",method="other",code="OK"} 1"#,
            r#"logi_grpc_call_seconds_count{service="logi.v1.BookingService",method="CreateBooking"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn a_call_dropped_before_its_head_counts_as_cancelled_once() {
        let mut registry = Registry::default();
        let rpcs = Rpcs::new(&mut registry);
        let server = tower::service_fn(|req: Request<()>| async move {
            if req.uri().path().ends_with("GetBooking") {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(Response::new(()))
        });
        let mut service = RpcLayer(rpcs).layer(server);
        let mut cx = Context::from_waker(Waker::noop());
        let call = |service: &mut RpcService<_>, path: &str| {
            service.call(Request::builder().uri(path).body(()).unwrap())
        };

        let mut pending = Box::pin(call(&mut service, "/logi.v1.BookingService/GetBooking"));
        assert!(pending.as_mut().poll(&mut cx).is_pending());
        let text = logi::metrics::encode(&registry);
        assert!(!text.contains(r#"method="GetBooking",code="#), "{text}");
        drop(pending);

        let mut done = Box::pin(call(&mut service, "/logi.v1.BookingService/CreateBooking"));
        assert!(done.as_mut().poll(&mut cx).is_ready());
        drop(done);

        let text = logi::metrics::encode(&registry);
        for line in [
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="GetBooking",code="CANCELLED"} 1"#,
            r#"logi_grpc_call_seconds_count{service="logi.v1.BookingService",method="GetBooking"} 1"#,
            r#"logi_grpc_calls_total{service="logi.v1.BookingService",method="CreateBooking",code="OK"} 1"#,
            r#"logi_grpc_call_seconds_count{service="logi.v1.BookingService",method="CreateBooking"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(
            !text.contains(r#"method="CreateBooking",code="CANCELLED""#),
            "{text}"
        );
    }
}

//! The gRPC services a backend serves, each reply tagged with the backend's name.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{Stream, StreamExt, stream};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use crate::call::requested_failure;
use crate::meta;
use crate::pb::helloworld::{HelloReply, HelloRequest, HelloStreamRequest, greeter_server};
use crate::pb::pcbook::{
    CreateLaptopRequest, CreateLaptopResponse, LoginRequest, LoginResponse, auth_service_server,
    laptop_service_server,
};

/// The reply stream type of the streaming methods.
type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send + 'static>>;

/// The password `Login` accepts, as in the pcbook tutorial's seeded users.
pub(crate) const PASSWORD: &str = "secret";

/// `helloworld.Greeter`.
pub(crate) struct Greeter {
    /// The backend's name, put in every greeting.
    pub(crate) backend: Arc<str>,
}

/// `[FAIL_AFTER]`: after how many replies a streaming response fails, and with what.
fn fail_after(md: &MetadataMap) -> Option<(u64, Status)> {
    let after = md
        .get(meta::FAIL_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((after, requested_failure(md)?))
}

#[tonic::async_trait]
impl greeter_server::Greeter for Greeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        let name = request.into_inner().name;
        Ok(Response::new(HelloReply {
            message: format!("Hello {name} from {}", self.backend),
        }))
    }

    type SayHelloStreamStream = ReplyStream;

    async fn say_hello_stream(
        &self,
        request: Request<HelloStreamRequest>,
    ) -> Result<Response<ReplyStream>, Status> {
        let fail = fail_after(request.metadata());
        let HelloStreamRequest {
            name,
            count,
            interval_ms,
        } = request.into_inner();
        let backend = self.backend.clone();
        let interval = Duration::from_millis(u64::from(interval_ms));
        // State: the index of the next reply, None once the stream has ended.
        let replies = stream::unfold(Some(0u64), move |next| {
            let (name, backend, fail) = (name.clone(), backend.clone(), fail.clone());
            async move {
                let i = next?;
                if let Some((after, status)) = fail
                    && i == after
                {
                    return Some((Err(status), None));
                }
                if i >= u64::from(count) {
                    return None;
                }
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                let message = format!("Hello {name} #{i} from {backend}");
                Some((Ok(HelloReply { message }), Some(i + 1)))
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }

    async fn say_hello_client_stream(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<HelloReply>, Status> {
        let mut inbound = request.into_inner();
        let mut names = Vec::new();
        while let Some(hello) = inbound.message().await? {
            names.push(hello.name);
        }
        Ok(Response::new(HelloReply {
            message: format!("Hello {} from {}", names.join(", "), self.backend),
        }))
    }

    type SayHelloBidiStream = ReplyStream;

    async fn say_hello_bidi(
        &self,
        request: Request<Streaming<HelloRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let fail = fail_after(request.metadata());
        let backend = self.backend.clone();
        let inbound = request.into_inner();
        // State: the inbound stream and how many replies were sent; None once ended.
        let replies = stream::unfold(Some((inbound, 0u64)), move |state| {
            let (backend, fail) = (backend.clone(), fail.clone());
            async move {
                let (mut inbound, sent) = state?;
                if let Some((after, status)) = fail
                    && sent == after
                {
                    return Some((Err(status), None));
                }
                match inbound.next().await? {
                    Ok(hello) => {
                        let message = format!("Hello {} from {backend}", hello.name);
                        Some((Ok(HelloReply { message }), Some((inbound, sent + 1))))
                    }
                    Err(status) => Some((Err(status), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// `techschool_pcbook.AuthService`.
pub(crate) struct Auth {
    /// The backend's name, put in every token.
    pub(crate) backend: Arc<str>,
    /// Tokens issued so far, to make each one distinct.
    pub(crate) issued: AtomicU64,
}

#[tonic::async_trait]
impl auth_service_server::AuthService for Auth {
    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let LoginRequest { username, password } = request.into_inner();
        if username.is_empty() || password != PASSWORD {
            return Err(Status::unauthenticated("incorrect username/password"));
        }
        let n = self.issued.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response::new(LoginResponse {
            access_token: format!("{}.{username}.{n}", self.backend),
        }))
    }
}

/// `techschool_pcbook.LaptopService`.
pub(crate) struct Laptops {
    /// The backend's name, put in every generated id.
    pub(crate) backend: Arc<str>,
    /// Laptops stored so far, to number the generated ids.
    pub(crate) stored: AtomicU64,
}

#[tonic::async_trait]
impl laptop_service_server::LaptopService for Laptops {
    async fn create_laptop(
        &self,
        request: Request<CreateLaptopRequest>,
    ) -> Result<Response<CreateLaptopResponse>, Status> {
        let laptop = request
            .into_inner()
            .laptop
            .ok_or_else(|| Status::invalid_argument("laptop is required"))?;
        let n = self.stored.fetch_add(1, Ordering::Relaxed) + 1;
        let id = if laptop.id.is_empty() {
            format!("{}-{n}", self.backend)
        } else {
            laptop.id
        };
        Ok(Response::new(CreateLaptopResponse { id }))
    }
}

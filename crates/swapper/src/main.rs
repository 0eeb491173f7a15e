use asg_core::config::Function;
use asg_core::lambda::App;
use lambda_runtime::{run, service_fn, tracing, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing::init_default_subscriber();
    let app = App::from_env(Function::Swapper).await.inspect_err(|e| tracing::error!("configuration: {e}"))?;
    run(service_fn(|event| swapper::handler(&app, event))).await
}

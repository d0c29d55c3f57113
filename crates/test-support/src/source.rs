//! HTTP sources on loopback, for the oracle to fetch from.

/// Serves `app` on a loopback port for as long as the test's tokio runtime lives; answers its base
/// URL (`http://127.0.0.1:PORT`).
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A loopback source answering `body` at `/`; answers its URL.
pub async fn fixed(body: &'static str) -> String {
    let app = axum::Router::new().route("/", axum::routing::get(move || async move { body }));
    format!("{}/", serve(app).await)
}

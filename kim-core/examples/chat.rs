use kim_core::{
    Accepted, Acceptor, Channel, DefaultServer, Frame, LoginConn, MessageListener, Reject,
    StateListener,
};

/// Login: the first frame is the user's name (a real app checks a token here).
struct Login;
impl Acceptor for Login {
    async fn accept(&self, login: &mut LoginConn<'_>) -> Result<Accepted, Reject> {
        let frame = login.read_frame().await?;
        let name = std::str::from_utf8(&frame.payload).map_err(|_| Reject::new("bad name"))?;
        Ok(Accepted::new(name).with_reply(Frame::text("welcome")))
    }
}

/// `@bob hi` goes to bob (or answers that bob is offline); anything else is echoed.
struct Chat;
impl MessageListener for Chat {
    async fn receive(&self, channel: &Channel, message: Frame) {
        let text = String::from_utf8_lossy(&message.payload);
        let Some((to, body)) = text.strip_prefix('@').and_then(|t| t.split_once(' ')) else {
            let _ = channel.push_frame(message);
            return;
        };
        let sent = channel
            .server()
            .push_text(to, format!("{}: {body}", channel.id()));
        if sent.is_err() {
            let _ = channel.push_text(format!("{to} is offline"));
        }
    }
}

/// Presence: the others hear who comes and goes.
struct Presence;
impl StateListener for Presence {
    async fn login(&self, channel: &Channel) {
        tell_others(channel, "joined");
    }
    async fn disconnect(&self, channel: &Channel) {
        tell_others(channel, "left");
    }
}

fn tell_others(channel: &Channel, what: &str) {
    for other in channel.server().channels().channels() {
        if other.id() != channel.id() {
            let _ = other.push_text(format!("{} {what}", channel.id()));
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // kim logs logins, closes and errors at info; RUST_LOG=debug says more.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    DefaultServer::new(kim_ws::WsUpgrader::new(), Chat)
        .with_acceptor(Login)
        .with_state_listener(Presence)
        .run("127.0.0.1:8000", |server| async move {
            tokio::signal::ctrl_c().await?;
            server.shutdown(std::time::Duration::from_secs(5)).await;
            Ok(())
        })
        .await
}

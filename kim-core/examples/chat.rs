use kim_core::{
    Accepted, Acceptor, Agent, DefaultServer, Frame, LoginConn, MessageListener, Reject,
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

/// `bob: hi` goes to bob (or answers that bob is offline); anything else is echoed.
struct Chat;
impl MessageListener for Chat {
    async fn receive(&self, agent: &Agent, message: Frame) {
        let text = String::from_utf8_lossy(&message.payload);
        let Some((to, body)) = text.split_once(": ") else {
            let _ = agent.push_frame(message);
            return;
        };
        let sent = agent
            .server()
            .push_text(to, format!("{}: {body}", agent.id()));
        if sent.is_err() {
            let _ = agent.push_text(format!("{to} is offline"));
        }
    }
}

/// Presence: the others hear who comes and goes.
struct Presence;
impl StateListener for Presence {
    async fn login(&self, agent: &Agent) {
        tell_others(agent, "joined");
    }
    async fn disconnect(&self, agent: &Agent) {
        tell_others(agent, "left");
    }
}

fn tell_others(agent: &Agent, what: &str) {
    for other in agent.server().channels().channels() {
        if other.id() != agent.id() {
            let _ = other.push_text(format!("{} {what}", agent.id()));
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // kim logs logins, closes and errors at info; RUST_LOG=debug says more.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
    let server = DefaultServer::new(kim_ws::WsUpgrader::new(), Chat)
        .with_acceptor(Login)
        .with_state_listener(Presence)
        .start("127.0.0.1:8000")
        .await?;
    tokio::signal::ctrl_c().await?;
    server.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}

//! The webhook's string enums: its destination format, its delivery status, its method.

use crate::domain::str_enum;

str_enum! {
    /// The destination format.
    pub enum WebhookType {
        Generic => "Generic", Slack => "Slack", MSTeams => "MSTeams",
        GoogleChat => "GoogleChat", Custom => "Custom",
    }
}

str_enum! {
    /// Delivery state of a webhook. Only `active` and `disabled` can be asked for;
    /// the others are set by the dispatcher.
    pub enum WebhookStatus {
        Active => "active", Disabled => "disabled", Failed => "failed",
        AwaitingRetry => "awaitingRetry", RetryLimitReached => "retryLimitReached",
    }
}

str_enum! {
    /// How deliveries are sent. GET flattens the event into query parameters.
    pub enum HttpMethod { Post => "POST", Put => "PUT", Get => "GET" }
}

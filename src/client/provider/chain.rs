//! [`ProviderChain`]: providers asked in turn.

use std::fmt;

use super::{
    CredentialSet, EcsMetadata, Environment, KooCli, OidcSts, PodIdentity, ProfileFile,
    ProvideCredentials, ProviderError,
};

/// Providers asked in turn; the first that yields supplies the client, and renews its
/// credentials from then on. A provider that does not apply here is passed over; one that
/// applies and fails (a file that does not parse, a service that refuses) stops the chain, so
/// that a half-made setting is reported rather than another identity quietly taken.
///
/// ```
/// use iotda_task_watcher::client::provider::{ProfileFile, ProviderChain};
/// // The official SDKs' order, with a profile file of your own tried first.
/// let chain = ProviderChain::empty()
///     .with(ProfileFile::at("/etc/deploy/huaweicloud-credentials"))
///     .with_defaults();
/// assert_eq!(chain.names()[..2], ["profile file", "environment"]);
/// ```
#[derive(Debug, Default)]
pub struct ProviderChain {
    providers: Vec<Box<dyn ProvideCredentials>>,
}

impl ProviderChain {
    /// The official SDKs' chain, with KooCLI's file after their own: [`Environment`],
    /// [`ProfileFile`], [`KooCli`], [`OidcSts`], [`PodIdentity`], [`EcsMetadata`].
    #[must_use]
    pub fn from_env() -> Self {
        Self::empty().with_defaults()
    }

    /// A chain with no providers.
    #[must_use]
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds `provider` at the end of the chain.
    #[must_use]
    pub fn with(mut self, provider: impl ProvideCredentials + 'static) -> Self {
        self.providers.push(Box::new(provider));
        self
    }

    /// Adds the official SDKs' providers at the end of the chain, in their order.
    #[must_use]
    pub fn with_defaults(self) -> Self {
        self.with(Environment::new())
            .with(ProfileFile::new())
            .with(KooCli::new())
            .with(OidcSts::new())
            .with(PodIdentity::new())
            .with(EcsMetadata::new())
    }

    /// The providers' names, in order.
    #[must_use]
    pub fn names(&self) -> Vec<&str> {
        self.providers
            .iter()
            .map(ProvideCredentials::name)
            .collect()
    }

    /// Asks each provider in turn: the first that yields, with what it gave.
    ///
    /// # Errors
    /// [`NoCredentials`], naming each provider and why it gave nothing.
    pub async fn resolve(
        self,
    ) -> Result<(Box<dyn ProvideCredentials>, CredentialSet), NoCredentials> {
        let mut tried = Vec::with_capacity(self.providers.len());
        for provider in self.providers {
            match provider.provide().await {
                Ok(set) => {
                    tracing::debug!(provider = provider.name(), "credentials found");
                    return Ok((provider, set));
                }
                Err(why) => {
                    tracing::debug!(provider = provider.name(), %why, "no credentials here");
                    let failed = !why.is_not_applicable();
                    tried.push((provider.name().to_owned(), why));
                    if failed {
                        break;
                    }
                }
            }
        }
        Err(NoCredentials { tried })
    }
}

/// No provider of a chain gave credentials: each one tried, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCredentials {
    tried: Vec<(String, ProviderError)>,
}

impl NoCredentials {
    /// Each provider tried, and why it gave nothing.
    #[must_use]
    pub fn tried(&self) -> &[(String, ProviderError)] {
        &self.tried
    }
}

impl fmt::Display for NoCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no credentials found; tried")?;
        if self.tried.is_empty() {
            return f.write_str(" nothing (the chain is empty)");
        }
        for (i, (name, why)) in self.tried.iter().enumerate() {
            let sep = if i == 0 { " " } else { "; " };
            write!(f, "{sep}{name} ({why})")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoCredentials {}

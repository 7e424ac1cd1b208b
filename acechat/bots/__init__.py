"""Platform adapters (console, Discord, Slack) and the process that runs them."""

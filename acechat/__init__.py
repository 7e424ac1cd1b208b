"""acechat: Discord and Slack bots for the Ace Data Cloud AI Chat API."""

"""Remote notifiers: webhook (generic JSON, Slack, Mattermost, Discord) and email (SMTP)."""

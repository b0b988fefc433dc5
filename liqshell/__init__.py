"""liqshell: the asyncio shell around liqcore."""

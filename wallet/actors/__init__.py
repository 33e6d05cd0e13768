"""pykka actors and the bridge between them and the asyncio event loop."""

"""Who may join a room: the selector's strategies and fallback chain (`selector`), the leases it
hands out (`leases`) and the capacity stores that count them: the contract (`store`), one
worker's memory (`memory_store`) and Redis shared by several workers (`redis_store`).
"""

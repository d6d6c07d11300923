"""pystack.iface"""

"""pystack.io"""

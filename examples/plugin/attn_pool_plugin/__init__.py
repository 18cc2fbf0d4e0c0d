"""An example recbole-attn plugin: the :class:`~attn_pool_plugin.attnpool.AttnPool` model."""

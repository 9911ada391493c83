"""GLoRIA: the released model, its official inference and zero-shot, a localization map, and its
pretraining recipe (``bench train gloria``). The method registers from
``bench.methods.gloria.method`` (named in ``bench.methods.catalog``)."""

/* SPDX-License-Identifier: GPL-2.0 */
/* BRC: BPF Redis Cache, tc (clsact) programs for a Redis host's interface.
 *
 * brc_ingress sees client->server segments, brc_egress server->client ones.
 * Mode off: pass. Mode observe: parse, track, shadow-cache and measure; the
 * packet is never altered, dropped or redirected (every path returns
 * TC_ACT_OK). Compiled by bcc: see module_utils/brc_bpf.py.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>

#include "brc_contract.h"
#include "brc_maps.h"
#include "brc_pkt.h"
#include "brc_stats.h"

int brc_ingress(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_pkt pkt = {};

	if (!cfg || cfg->mode == BRC_MODE_OFF)
		return TC_ACT_OK;
	if (brc_parse_tcp4(skb, &pkt) != BRC_PKT_TCP4)
		return TC_ACT_OK;
	if (pkt.dport != cfg->port)
		return TC_ACT_OK;
	brc_count(PKT_INGRESS);
	return TC_ACT_OK;
}

int brc_egress(struct __sk_buff *skb)
{
	struct brc_config *cfg = brc_get_config();
	struct brc_pkt pkt = {};

	if (!cfg || cfg->mode == BRC_MODE_OFF)
		return TC_ACT_OK;
	if (brc_parse_tcp4(skb, &pkt) != BRC_PKT_TCP4)
		return TC_ACT_OK;
	if (pkt.sport != cfg->port)
		return TC_ACT_OK;
	brc_count(PKT_EGRESS);
	return TC_ACT_OK;
}

/**
 * The node's view of the cluster: a consistent-hash ring over member names and
 * one long-lived peer connection per other member. Membership changes build a
 * new view and swap it in one assignment, so a lookup never sees half a
 * change; connections of removed members close after their calls finish.
 */
import { invalidArgument } from "../errors.ts";
import { parseAddress, type SelfAddress } from "./address.ts";
import type { Membership, Peer } from "./peer.ts";
import { HashRing, type RingOptions } from "./ring.ts";

export interface MemberSpec {
  /** Ring name; every node must use the same name for the same member. */
  name: string;
  /** host:port peers reach it at. */
  address: string;
  /** Relative share of keys. Default: 1. */
  weight?: number;
}

export type PeerFactory = (name: string, address: string) => Peer;

export interface PickerOptions {
  /** Ring tuning; must be the same on every node. */
  ring?: RingOptions;
  /**
   * Whether this node is a member even when the list leaves it out. True for
   * static lists; false under discovery, where every node must see exactly
   * the member set etcd holds or the rings would differ. Default: true.
   */
  selfAlwaysMember?: boolean;
}

interface View {
  readonly ring: HashRing;
  /** The ring name this node goes by in this view. */
  readonly selfName: string;
  readonly byName: ReadonlyMap<string, Peer>;
  readonly peers: readonly Peer[];
  readonly members: readonly MemberSpec[];
}

export class PeerPicker implements Membership {
  private view: View;

  constructor(
    private readonly selfName: string,
    private readonly self: SelfAddress,
    private readonly createPeer: PeerFactory,
    private readonly options: PickerOptions = {},
  ) {
    this.view = this.build(this.selfAlwaysMember ? [{ name: selfName, address: self.address }] : [], new Map());
  }

  private get selfAlwaysMember(): boolean {
    return this.options.selfAlwaysMember ?? true;
  }

  ownerOf(key: string): Peer | null {
    const view = this.view;
    const owner = view.ring.owner(key);
    if (owner === undefined || owner === view.selfName) return null;
    return view.byName.get(owner) ?? null;
  }

  /** Name of the member owning `key` (this node's ring name when it owns it). */
  ownerName(key: string): string {
    return this.view.ring.owner(key) ?? this.view.selfName;
  }

  peers(): readonly Peer[] {
    return this.view.peers;
  }

  /** Under discovery (the only mode where this node may be absent from the list), dead members' leases expire. */
  get dropsDeadMembers(): boolean {
    return !this.selfAlwaysMember;
  }

  members(): readonly MemberSpec[] {
    return this.view.members;
  }

  /** The name this node has on the ring (the list's name for our address, if it gives one). */
  get ringName(): string {
    return this.view.selfName;
  }

  /**
   * Replaces the membership. This node is recognised by name or by any
   * spelling of its address (and added when `selfAlwaysMember`). Returns
   * whether the member set (names, addresses, weights) changed.
   */
  setMembers(members: readonly MemberSpec[]): boolean {
    const old = this.view;
    this.view = this.build(members, old.byName);
    for (const [name, peer] of old.byName) {
      if (this.view.byName.get(name) !== peer) peer.close();
    }
    return signature(old) !== signature(this.view);
  }

  close(): void {
    const old = this.view;
    this.view = this.build([], new Map());
    for (const peer of old.byName.values()) peer.close();
  }

  private build(members: readonly MemberSpec[], reuse: ReadonlyMap<string, Peer>): View {
    let selfName = this.selfName;
    let selfSpec: MemberSpec | undefined;
    const others: MemberSpec[] = [];
    const seen = new Set<string>();
    for (const member of members) {
      if (typeof member.name !== "string" || member.name === "") throw invalidArgument("every member needs a name");
      if (seen.has(member.name)) throw invalidArgument(`member ${JSON.stringify(member.name)} is listed twice`);
      seen.add(member.name);
      parseAddress(member.address);
      if (member.name === this.selfName || this.self.matches(member.address)) {
        if (selfSpec !== undefined) {
          throw invalidArgument(`members ${selfSpec.name} and ${member.name} both denote this node`);
        }
        selfSpec = member;
        selfName = member.name;
      } else {
        others.push(member);
      }
    }
    const self: MemberSpec | undefined =
      selfSpec ?? (this.selfAlwaysMember ? { name: selfName, address: this.self.address } : undefined);
    const all = self === undefined ? others : [self, ...others];
    const ring = new HashRing(this.options.ring);
    ring.setMembers(all.map((m) => ({ name: m.name, weight: m.weight ?? 1 })));
    const byName = new Map<string, Peer>();
    for (const member of others) {
      const existing = reuse.get(member.name);
      byName.set(
        member.name,
        existing !== undefined && existing.address === member.address
          ? existing
          : this.createPeer(member.name, member.address),
      );
    }
    return {
      ring,
      selfName,
      byName,
      peers: [...byName.values()],
      members: all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    };
  }
}

function signature(view: View): string {
  return view.members.map((m) => `${m.name}@${m.address}*${m.weight ?? 1}`).join(",");
}
